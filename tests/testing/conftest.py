"""Fixtures for the emulator's tests: a plain aiohttp caller (the plugin's fixtures come from
the top-level conftest's ``pytest_plugins``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from osvi_async.testing import OsviEmulator
from tests.testing.helpers import Api, api_for


@pytest.fixture
async def api(osvi_emulator: OsviEmulator) -> AsyncIterator[Api]:
    """A plain aiohttp caller for ``osvi_emulator``, sending its token by default."""
    async with api_for(osvi_emulator) as caller:
        yield caller
