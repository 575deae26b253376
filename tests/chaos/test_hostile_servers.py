"""Scenario 4: servers that are slow, silent, unreachable, or that answer far too much.

The client must give up on time with a typed error that says whether the request was sent,
refuse a body past its 4 MiB cap (`ResponseDecodeError`) without holding the body in memory,
treat a gzip or deflate bomb the same way, and leave no task, connection or descriptor behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from osvi_async import (
    APITimeoutError,
    OsviClient,
    OsviError,
    ResponseDecodeError,
    RetryPolicy,
)
from osvi_async.testing import FaultPlan, OsviEmulator
from tests.chaos._harness import audit, injected, open_fds, run_bulk, settle, spread_items
from tests.chaos._report import Recorder
from tests.chaos._servers import (
    SESSION_ID,
    TOKEN,
    Behaviour,
    RawServer,
    bomb,
    compressed,
    full_backlog,
    huge_body,
    never_answer,
)

MIB = 1024 * 1024
CAP = 4 * MIB
"""The SDK's default cap on a response body (ClientConfig.max_response_bytes)."""
HUGE_BODY = 64 * MIB
BOMB_INFLATED = 128 * MIB


async def peak_growth(call: Callable[[], Awaitable[object]]) -> tuple[object, int]:
    """Await `call()` under tracemalloc; return its result (or error) and the peak growth."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        try:
            outcome: object = await call()
        except OsviError as exc:
            outcome = exc
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return outcome, peak - baseline


@pytest.fixture
async def hostile() -> AsyncIterator[Callable[[Behaviour], Awaitable[RawServer]]]:
    """Starts raw servers on 127.0.0.1 for the test and stops them after it."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(behaviour: Behaviour) -> RawServer:
            return await stack.enter_async_context(RawServer(behaviour))

        yield start


async def test_answers_slower_than_the_timeout(
    osvi_emulator: OsviEmulator, reliability: Recorder
) -> None:
    """Every answer takes 0.4 s, the timeout is 0.1 s: typed timeouts, on time, none lost."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=0.4)
    sessions = [osvi_emulator.create_session() for _ in range(8)]
    items = spread_items(sessions, 40, "slow", 3)
    policy = RetryPolicy(max_retries=1, initial_delay=0.001, max_delay=0.005)
    fds_before = open_fds()
    started = time.monotonic()
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, timeout=0.1, retry=policy
    ) as client:
        # Every item times out: without hold_on_failure=False all but one per session are held.
        result = await run_bulk(
            client, items, concurrency=8, circuit_breaker=None, hold_on_failure=False
        )
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.5)  # past the server's 0.4 s: a handler still running would apply now
    leaks = await settle(fds_before, lambda: osvi_emulator.stats.open_connections)
    report = audit(
        osvi_emulator, items, result.received, result.leftovers, result.summary, complete=True
    )
    stats = osvi_emulator.stats
    failures, delayed = injected(osvi_emulator)
    reliability.add(
        section=4,
        scenario="answers slower than the timeout (0.4 s vs 0.1 s)",
        items=len(items),
        faults=failures,
        latency=delayed,
        requests=stats.requests_total,
        **(report.figures() | leaks.figures()),
        bound=(
            f"requests {stats.requests_total} <= 2N = {2 * len(items)}; run {elapsed:.2f} s < 4 s"
        ),
        note=f"{report.error_summary()}; {report.applied_total} applied by a late handler",
    )

    assert not report.problems, "\n".join(report.problems)
    assert leaks.clean, leaks
    errors = [outcome.error for outcome in result.received]
    assert all(isinstance(error, APITimeoutError) and error.request_sent for error in errors)
    assert [outcome.attempts for outcome in result.received] == [2] * len(items)
    assert stats.requests_total <= 2 * len(items)  # all, unless one timed out before arriving
    # Waiting for the answers would take 40 / 8 lanes x 2 attempts x 0.4 s = 4 s.
    assert elapsed < 4.0


async def test_server_that_never_answers(
    hostile: Callable[[Behaviour], Awaitable[RawServer]], reliability: Recorder
) -> None:
    """A server that reads and never writes: APITimeoutError(request_sent=True), 3 tries."""
    server = await hostile(never_answer)
    policy = RetryPolicy(max_retries=2, initial_delay=0.001, max_delay=0.005)
    fds_before = open_fds()
    started = time.monotonic()
    async with OsviClient(TOKEN, base_url=server.base_url, timeout=0.2, retry=policy) as client:
        with pytest.raises(APITimeoutError) as caught:
            await client.inject_context(SESSION_ID, "never answered")
    elapsed = time.monotonic() - started
    leaks = await settle(fds_before, lambda: server.open_connections)
    reliability.add(
        section=4,
        scenario="server accepts and never answers",
        items=1,
        faults=server.requests,
        requests=server.requests,
        **leaks.figures(),
        bound=f"3 attempts x 0.2 s timeout: gave up after {elapsed:.2f} s (< 2 s)",
        note="APITimeoutError(request_sent=True): may have been applied",
    )

    assert caught.value.request_sent is True
    assert caught.value.attempts == 3
    assert 1 <= server.requests <= 3  # all three, unless one timed out before being read
    assert 0.55 <= elapsed < 2.0
    assert leaks.clean, leaks


async def test_server_that_never_accepts(reliability: Recorder) -> None:
    """A full accept queue: connect hangs; APITimeoutError(request_sent=False), nothing leaks."""
    policy = RetryPolicy(max_retries=1, initial_delay=0.001, max_delay=0.005)
    with full_backlog() as port:
        fds_before = open_fds()
        started = time.monotonic()
        async with OsviClient(
            TOKEN, base_url=f"http://127.0.0.1:{port}", timeout=0.3, retry=policy
        ) as client:
            with pytest.raises(APITimeoutError) as caught:
                await client.inject_context(SESSION_ID, "never connected")
        elapsed = time.monotonic() - started
        leaks = await settle(fds_before, lambda: 0)
    reliability.add(
        section=4,
        scenario="server never accepts (full backlog)",
        items=1,
        faults=2,
        requests=0,
        **leaks.figures(),
        bound=f"2 connects x 0.3 s timeout: gave up after {elapsed:.2f} s (< 2 s)",
        note="APITimeoutError(request_sent=False): certainly not applied",
    )

    assert caught.value.request_sent is False
    assert caught.value.attempts == 2
    assert 0.5 <= elapsed < 2.0
    assert leaks.clean, leaks


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_oversized_body_is_refused_without_holding_it(
    hostile: Callable[[Behaviour], Awaitable[RawServer]], reliability: Recorder, framing: str
) -> None:
    """A 64 MiB answer: ResponseDecodeError at the 4 MiB cap, memory growth far below 64 MiB."""
    server = await hostile(huge_body(framing, HUGE_BODY))
    fds_before = open_fds()
    async with OsviClient(TOKEN, base_url=server.base_url, timeout=10.0) as client:
        error, growth = await peak_growth(lambda: client.inject_context(SESSION_ID, "big"))
    leaks = await settle(fds_before, lambda: server.open_connections)
    reliability.add(
        section=4,
        scenario="64 MiB answer (Content-Length, chunked, until close)",
        items=1,
        faults=1,
        requests=server.requests,
        **leaks.figures(),
        bound="peak memory growth < 16 MiB",
        note=(
            f"{framing}: ResponseDecodeError, peak growth {growth / MIB:.1f} MiB, "
            f"server wrote {server.bytes_written / MIB:.1f} MiB"
        ),
    )

    assert isinstance(error, ResponseDecodeError), error
    assert "larger than 4194304 bytes" in str(error)
    assert server.requests == 1  # a success status with an unreadable body is not retried
    assert growth < 16 * MIB
    assert leaks.clean, leaks


@functools.cache
def _bomb_payload(encoding: str) -> bytes:
    return compressed(encoding, BOMB_INFLATED)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_compression_bomb_is_refused_without_inflating_it(
    hostile: Callable[[Behaviour], Awaitable[RawServer]],
    reliability: Recorder,
    encoding: str,
    framing: str,
) -> None:
    """A ~130 KB body inflating to 128 MiB: a clear OsviError, memory growth below 32 MiB."""
    payload = _bomb_payload(encoding)
    assert len(payload) < BOMB_INFLATED // 500
    server = await hostile(bomb(encoding, framing, payload))
    fds_before = open_fds()
    async with OsviClient(TOKEN, base_url=server.base_url, timeout=10.0) as client:
        error, growth = await peak_growth(lambda: client.inject_context(SESSION_ID, "bomb"))
    leaks = await settle(fds_before, lambda: server.open_connections)
    reliability.add(
        section=4,
        scenario="compression bomb (128 MiB inflated, gzip and deflate)",
        items=1,
        faults=1,
        requests=server.requests,
        **leaks.figures(),
        bound="peak memory growth < 32 MiB",
        note=(
            f"{encoding}/{framing}: {len(payload) // 1024} KiB body, "
            f"{type(error).__name__}, peak growth {growth / MIB:.1f} MiB"
        ),
    )

    assert isinstance(error, ResponseDecodeError), error
    assert "larger than 4194304 bytes" in str(error)
    assert server.requests == 1
    assert growth < 32 * MIB
    assert leaks.clean, leaks
