"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from osvi_async import OsviClient, RetryPolicy
from tests.support import BASE_URL, TOKEN, FakeSleep

pytest_plugins = ["osvi_async.testing.pytest_plugin", "tests.brokers.rabbit"]


@pytest.fixture
def fake_sleep() -> FakeSleep:
    """A sleep that records its argument."""
    return FakeSleep()


@pytest.fixture
def fast_retry(fake_sleep: FakeSleep) -> RetryPolicy:
    """The default policy, with recorded sleeps and a fixed jitter of one half."""
    return RetryPolicy(sleep=fake_sleep, random=lambda: 0.5)


@pytest.fixture
async def client(fast_retry: RetryPolicy) -> AsyncIterator[OsviClient]:
    """A client pointed at the production URL; unit tests intercept it with aioresponses."""
    async with OsviClient(TOKEN, base_url=BASE_URL, retry=fast_retry) as osvi:
        yield osvi
