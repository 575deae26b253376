"""Fixtures for the emulator's tests: a plain aiohttp caller (the plugin's fixtures come from
the top-level conftest's ``pytest_plugins``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from osvi_async.testing import OsviEmulator
from tests.testing.helpers import Api


@pytest.fixture
async def api(osvi_emulator: OsviEmulator) -> AsyncIterator[Api]:
    """A plain aiohttp caller for ``osvi_emulator``, sending its token by default."""
    async with aiohttp.ClientSession(base_url=osvi_emulator.base_url) as http:
        yield Api(http, osvi_emulator.api_token)
