"""Cancellation always wins, even when it lands in the same instant as an attempt's timeout.

aiohttp enters its request timer twice and uncancels the task once per exit, so a `cancel()`
that arrived as that timer fired used to come out as a `TimeoutError`, which was retried: up to
three more requests after the caller had cancelled. These tests race the two on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter

import pytest

from osvi_async import OsviClient, RetryPolicy
from tests.chaos._report import Recorder
from tests.chaos._servers import SESSION_ID, TOKEN, RawServer, never_answer

TIMEOUT = 0.1
TRIALS = 20
# A visible backoff (50 ms): a cancel that lands just after a genuine timeout hits the sleep,
# so any second request the server sees was sent by a call whose task was being cancelled.
POLICY = RetryPolicy(initial_delay=0.05, max_delay=0.05, random=lambda: 1.0)


def busy_then_cancel(task: asyncio.Task[object], busy_seconds: float) -> None:
    """Hold the loop (so the attempt's timer comes due meanwhile), then cancel `task`."""
    end = time.monotonic() + busy_seconds
    while time.monotonic() < end:
        pass
    task.cancel()


async def settled_requests(server: RawServer) -> int:
    """The requests the server has read, once every connection the client opened is read."""
    for _ in range(100):
        await asyncio.sleep(0.005)
        if server.open_connections == 0:
            break
    return server.requests


async def test_cancel_at_the_timeout_never_sends_again(reliability: Recorder) -> None:
    """A cancel landing as the attempt times out: one request per call, CancelledError."""
    jitter = random.Random(9)
    outcomes: list[tuple[str, int]] = []
    async with (
        RawServer(never_answer) as server,
        OsviClient(TOKEN, base_url=server.base_url, timeout=TIMEOUT, retry=POLICY) as client,
    ):
        loop = asyncio.get_running_loop()
        for _ in range(TRIALS):
            before = server.requests
            task = asyncio.create_task(client.inject_context(SESSION_ID, "x"))
            started = loop.time()
            await asyncio.sleep(0)  # the attempt's timer starts now
            loop.call_at(
                started + TIMEOUT + jitter.uniform(-0.003, 0.001),
                busy_then_cancel,
                task,
                jitter.uniform(0.002, 0.008),
            )
            try:
                await task
                ending = "returned"
            except asyncio.CancelledError:
                ending = "CancelledError"
            except Exception as exc:
                ending = type(exc).__name__
            outcomes.append((ending, await settled_requests(server) - before))
    reliability.add(
        section=3,
        scenario=f"cancel lands as the attempt's {TIMEOUT:g} s timeout fires, loop busy",
        items=TRIALS,
        requests=sum(sent for _, sent in outcomes),
        examples=TRIALS,
        bound="exactly 1 request per call; every call ends in CancelledError",
        tally=Counter(f"{ending} after {sent} request(s)" for ending, sent in outcomes),
    )
    assert outcomes == [("CancelledError", 1)] * TRIALS


async def test_cancel_during_backoff_sends_nothing_more() -> None:
    """A cancel that lands while a retry waits ends the call; the server saw one request."""
    sleeping = asyncio.Event()

    async def sleep(seconds: float) -> None:
        sleeping.set()
        await asyncio.sleep(seconds)

    policy = RetryPolicy(initial_delay=5.0, max_delay=5.0, random=lambda: 1.0, sleep=sleep)
    async with (
        RawServer(never_answer) as server,
        OsviClient(TOKEN, base_url=server.base_url, timeout=TIMEOUT, retry=policy) as client,
    ):
        task = asyncio.create_task(client.inject_context(SESSION_ID, "x"))
        await sleeping.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await settled_requests(server) == 1


async def test_a_sleep_that_swallows_the_cancel_does_not_lead_to_a_resend() -> None:
    """A custom sleep that eats CancelledError: the call still ends cancelled, unsent again."""
    sleeping = asyncio.Event()

    async def stubborn_sleep(seconds: float) -> None:
        sleeping.set()
        with contextlib.suppress(asyncio.CancelledError):  # deliberately bad: stays cancelling
            await asyncio.sleep(seconds)

    policy = RetryPolicy(initial_delay=5.0, max_delay=5.0, random=lambda: 1.0, sleep=stubborn_sleep)
    async with (
        RawServer(never_answer) as server,
        OsviClient(TOKEN, base_url=server.base_url, timeout=TIMEOUT, retry=policy) as client,
    ):
        task = asyncio.create_task(client.inject_context(SESSION_ID, "x"))
        await sleeping.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await settled_requests(server) == 1
