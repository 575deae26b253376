"""BulkRun.drain against the emulator: in-flight items finish, nothing new starts, grace holds."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from osvi_async import (
    BulkSummary,
    CircuitBreaker,
    ClientValidationError,
    InjectOutcome,
    InjectRequest,
    OsviClient,
    RetryPolicy,
    RunStoppedError,
)
from osvi_async.testing import FaultPlan, OsviEmulator
from tests.integration.conftest import other_tasks
from tests.integration.test_client_live import wait_until

CONCURRENCY = 16


def items_for(sessions: list[str], count: int, tag: str = "entry") -> list[InjectRequest]:
    """`count` requests round-robin over `sessions`, each context naming its index."""
    return [InjectRequest(sessions[i % len(sessions)], f"{tag} {i}") for i in range(count)]


def applied_counts(emulator: OsviEmulator, sessions: list[str]) -> Counter[str]:
    """How often each context was applied, over `sessions`."""
    return Counter(entry for session in sessions for entry in emulator.applied(session))


def check_identity(s: BulkSummary) -> None:
    """Every item pulled is counted once: items == succeeded + failed + held + stopped."""
    assert s.items == s.succeeded + s.failed + s.held + s.not_sent + s.interrupted


async def test_drain_lets_in_flight_items_finish_and_sends_nothing_new(
    osvi_emulator: OsviEmulator,
) -> None:
    """Drain mid-run: in-flight items finish and are yielded once; queued ones never go out."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=0.2)
    sessions = [osvi_emulator.create_session() for _ in range(64)]
    items = items_for(sessions, 2000)
    sent: list[int] = []
    received: list[InjectOutcome] = []
    async with OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url) as client:
        run = client.inject_many(items, concurrency=CONCURRENCY, on_send=sent.append)
        async with run:
            async for outcome in run:
                received.append(outcome)
                if len(received) == 2 * CONCURRENCY:
                    run.drain()
                    assert run.draining
                    drained_at = time.monotonic()
                    sent_before = len(sent)
        ended_at = time.monotonic()
    applied = applied_counts(osvi_emulator, sessions)
    summary = run.summary

    assert all(outcome.ok for outcome in received)
    assert len(received) == len(sent) == sent_before  # every item let through was yielded
    assert len(received) - 2 * CONCURRENCY <= CONCURRENCY  # at most the in-flight ones
    assert osvi_emulator.stats.requests_total == len(received)
    assert all(count == 1 for count in applied.values())  # 0 applied twice
    assert set(applied) == {outcome.request.context for outcome in received if outcome.request}
    assert run.leftovers
    for leftover in run.leftovers:
        assert isinstance(leftover.error, RunStoppedError)
        assert not leftover.error.request_sent
        assert not leftover.error.may_have_been_applied
        assert leftover.request is not None
        assert leftover.request.context not in applied
    assert summary.not_sent == len(run.leftovers)
    assert summary.interrupted == 0
    assert summary.items < len(items)  # the feeder stopped pulling
    check_identity(summary)
    for session in sessions:
        log = osvi_emulator.applied(session)
        assert list(log) == sorted(log, key=lambda entry: int(entry.split()[1]))
    assert ended_at - drained_at < 0.2 + 0.5  # about one in-flight latency, not a backlog
    await wait_until(lambda: other_tasks() == set())


async def test_grace_running_out_stops_slow_in_flight_items(
    osvi_emulator: OsviEmulator,
) -> None:
    """Server slower than the grace: in-flight items end as stopped, may have been applied."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=2.0)
    sessions = [osvi_emulator.create_session() for _ in range(8)]
    received: list[InjectOutcome] = []
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, timeout=10.0
    ) as client:
        run = client.inject_many(items_for(sessions, 40), concurrency=8)
        async with run:

            async def consume() -> None:
                received.extend([outcome async for outcome in run])

            task = asyncio.create_task(consume())
            await wait_until(lambda: osvi_emulator.stats.in_flight == 8)
            run.drain(grace=0.1)
            drained_at = time.monotonic()
            await task
            took = time.monotonic() - drained_at

    assert received == []
    stopped = [o.error for o in run.leftovers if isinstance(o.error, RunStoppedError)]
    in_flight = [error for error in stopped if error.request_sent]
    assert len(stopped) == len(run.leftovers)
    assert len(in_flight) == 8
    assert all(error.may_have_been_applied for error in in_flight)
    assert run.summary.interrupted == 8
    assert run.summary.not_sent == 32
    check_identity(run.summary)
    assert took < 1.0  # the grace, not the 2 s answers
    assert osvi_emulator.stats.requests_total == 8


async def test_drain_zero_after_a_long_grace_stops_at_once(osvi_emulator: OsviEmulator) -> None:
    """drain(10) then drain(0): the second shortens the grace to nothing."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=3.0)
    sessions = [osvi_emulator.create_session() for _ in range(4)]
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, timeout=10.0
    ) as client:
        run = client.inject_many(items_for(sessions, 20), concurrency=4)
        async with run:
            task = asyncio.create_task(anext(run, None))
            await wait_until(lambda: osvi_emulator.stats.in_flight == 4)
            run.drain(10.0)
            await asyncio.sleep(0.05)
            assert not task.done()  # still within the long grace
            started = time.monotonic()
            run.drain(0)
            assert await task is None  # the iteration ends normally
            took = time.monotonic() - started
    assert took < 0.5
    assert run.summary.interrupted == 4
    assert run.summary.not_sent == 16
    assert run.summary.items == 20


@pytest.mark.parametrize("kind", ["unavailable", "ambiguous_502"])
async def test_drain_during_an_outage_ends_items_in_backoff_at_once(
    osvi_emulator: OsviEmulator, kind: str
) -> None:
    """Items sleeping in a 5 s backoff end at once on a drain; no retry goes out."""
    osvi_emulator.fault_plan.outage(3600.0, kind=kind)
    sessions = [osvi_emulator.create_session() for _ in range(8)]
    slow = RetryPolicy(max_retries=5, initial_delay=5.0, max_delay=5.0, random=lambda: 1.0)
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=slow
    ) as client:
        run = client.inject_many(
            items_for(sessions, 16), concurrency=8, circuit_breaker=None, retry_budget=None
        )
        async with run:
            task = asyncio.create_task(anext(run, None))
            await wait_until(lambda: osvi_emulator.stats.requests_total == 8)
            await asyncio.sleep(0.05)  # every first attempt failed; all 8 are in backoff
            started = time.monotonic()
            run.drain()
            assert await task is None
            took = time.monotonic() - started
        await asyncio.sleep(0.1)
    assert took < 0.5
    assert osvi_emulator.stats.requests_total == 8  # no retry after the drain
    stopped = [o.error for o in run.leftovers if isinstance(o.error, RunStoppedError)]
    assert len(stopped) == 16
    backed_off = [error for error in stopped if error.attempts == 1]
    assert len(backed_off) == 8
    ambiguous = kind == "ambiguous_502"
    assert all(error.may_have_been_applied is ambiguous for error in backed_off)
    assert all(error.request_sent is ambiguous for error in backed_off)
    assert run.summary.interrupted == (8 if ambiguous else 0)
    check_identity(run.summary)


async def test_drain_while_waiting_for_the_circuit_ends_at_once(
    osvi_emulator: OsviEmulator,
) -> None:
    """Items held by an open circuit (60 s cool-down) end at once on a drain, unsent."""
    osvi_emulator.fault_plan.outage(3600.0, kind="unavailable")
    sessions = [osvi_emulator.create_session() for _ in range(8)]
    breaker = CircuitBreaker(failure_threshold=2, cooldown=60.0, max_cooldown=60.0)
    policy = RetryPolicy(max_retries=3, initial_delay=0.001, max_delay=0.001)
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=policy
    ) as client:
        run = client.inject_many(items_for(sessions, 8), concurrency=8, circuit_breaker=breaker)
        async with run:
            task = asyncio.create_task(anext(run, None))
            await wait_until(lambda: run.circuit_state == "open")
            await asyncio.sleep(0.05)
            sent = osvi_emulator.stats.requests_total
            started = time.monotonic()
            run.drain()
            assert await task is None
            took = time.monotonic() - started
    assert took < 0.5
    assert osvi_emulator.stats.requests_total == sent
    assert len(run.leftovers) == 8
    assert run.summary.not_sent == 8
    assert all(osvi_emulator.applied(session) == () for session in sessions)


async def test_drain_before_iterating_pulls_nothing(live_client: OsviClient) -> None:
    """A run drained before its first __anext__ ends at once, having pulled nothing."""
    run = live_client.inject_many([("4718a326-417b-4dda-90d0-21fd65a11cb8", "x")])
    run.drain()
    async with run:
        assert [outcome async for outcome in run] == []
    assert run.summary.items == 0
    assert run.leftovers == ()


async def test_stopped_items_carry_the_requests_flag(osvi_emulator: OsviEmulator) -> None:
    """A queued resend of a maybe-applied entry, stopped unsent, still says it may be applied."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=0.3)
    session = osvi_emulator.create_session()
    items = [
        InjectRequest(session, "first"),
        InjectRequest(session, "resent", may_have_been_applied=True),
    ]
    async with (
        OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url) as client,
        client.inject_many(items) as run,
    ):
        task = asyncio.create_task(anext(run, None))
        await wait_until(lambda: osvi_emulator.stats.in_flight == 1)
        run.drain()
        first = await task
        assert first is not None
        assert first.ok
        assert await anext(run, None) is None
    (leftover,) = run.leftovers
    assert isinstance(leftover.error, RunStoppedError)
    assert not leftover.error.request_sent
    assert leftover.error.may_have_been_applied
    assert osvi_emulator.applied(session) == ("first",)


async def test_bad_grace_is_refused(live_client: OsviClient) -> None:
    """A negative or non-numeric grace raises ClientValidationError."""
    async with live_client.inject_many([]) as run:
        with pytest.raises(ClientValidationError, match="grace"):
            run.drain(-1.0)
        with pytest.raises(ClientValidationError, match="grace"):
            run.drain("soon")  # type: ignore[arg-type]
        assert not run.draining
