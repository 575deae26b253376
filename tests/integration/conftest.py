"""Integration fixtures: a client bound to the emulator, and resource accounting."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from osvi_async import OsviClient, RetryPolicy
from osvi_async.testing import OsviEmulator

FAST_RETRY = RetryPolicy(initial_delay=0.001, max_delay=0.01)


@pytest.fixture
async def live_client(osvi_emulator: OsviEmulator) -> AsyncIterator[OsviClient]:
    """A client on the emulator's real socket, with millisecond backoff."""
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=FAST_RETRY, timeout=5.0
    ) as client:
        yield client


def open_fds() -> int:
    """File descriptors this process has open (Linux)."""
    return len(os.listdir("/proc/self/fd"))


def other_tasks() -> set[asyncio.Task[object]]:
    """Tasks still alive besides the current one."""
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}
