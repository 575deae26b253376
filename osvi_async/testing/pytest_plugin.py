"""Opt-in pytest fixtures for testing code that talks to OSVI, against the emulator.

Enable it in your top-level ``conftest.py``::

    pytest_plugins = ["osvi_async.testing.pytest_plugin"]

The fixtures are async, so pytest-asyncio must be installed. Each test gets its own emulator on
a free port, so tests cannot see each other's sessions, counters or fault plans.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from osvi_async import OsviClient, RetryPolicy
from osvi_async.testing._emulator import OsviEmulator

__all__ = ["osvi_client", "osvi_emulator", "osvi_session_id"]


@pytest_asyncio.fixture
async def osvi_emulator() -> AsyncIterator[OsviEmulator]:
    """A running emulator on 127.0.0.1 with no faults; set ``.fault_plan`` to add some."""
    async with OsviEmulator() as emulator:
        yield emulator


@pytest_asyncio.fixture
async def osvi_session_id(osvi_emulator: OsviEmulator) -> str:
    """The id of a fresh, active, empty session on ``osvi_emulator``."""
    return osvi_emulator.create_session()


@pytest_asyncio.fixture
async def osvi_client(osvi_emulator: OsviEmulator) -> AsyncIterator[OsviClient]:
    """An ``OsviClient`` bound to ``osvi_emulator``, closed after the test.

    Its retry policy waits milliseconds instead of seconds, so tests that script failures stay
    fast; build your own client (as docs/testing.md shows) to test other settings.
    """
    async with OsviClient(
        osvi_emulator.api_token,
        base_url=osvi_emulator.base_url,
        retry=RetryPolicy(initial_delay=0.001, max_delay=0.01),
    ) as client:
        yield client
