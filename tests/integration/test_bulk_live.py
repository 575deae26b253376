"""inject_many against the emulator on a real socket: accounting, order, bounds, outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from osvi_async import (
    CircuitBreaker,
    CircuitOpenError,
    ClientValidationError,
    EngineError,
    InjectOutcome,
    InjectRequest,
    OsviClient,
    RetryBudget,
    RetryPolicy,
    RunStoppedError,
)
from osvi_async.testing import FaultPlan, OsviEmulator
from tests.integration.conftest import FAST_RETRY, other_tasks
from tests.integration.test_client_live import wait_until


def spread(sessions: list[str], count: int) -> Iterator[tuple[str, str]]:
    """`count` items round-robin over `sessions`, each context naming its index."""
    return ((sessions[i % len(sessions)], f"entry {i}") for i in range(count))


def expected_order(sessions: list[str], count: int) -> dict[str, tuple[str, ...]]:
    """What each session's applied log must be after `spread(sessions, count)`."""
    return {
        session: tuple(f"entry {i}" for i in range(n, count, len(sessions)))
        for n, session in enumerate(sessions)
    }


async def collect(client: OsviClient, items: object, **options: object) -> list[InjectOutcome]:
    """Run inject_many to the end and return its outcomes."""
    async with client.inject_many(items, **options) as run:  # type: ignore[arg-type]
        return [outcome async for outcome in run]


async def test_every_item_once_in_session_order(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """2,000 items over 40 sessions with jittery latency: one outcome each, order kept."""
    osvi_emulator.fault_plan = FaultPlan(seed=7, latency=1.0, latency_seconds=(0.0, 0.004))
    sessions = [osvi_emulator.create_session() for _ in range(40)]
    outcomes = await collect(live_client, spread(sessions, 2000), concurrency=32)
    assert sorted(outcome.index for outcome in outcomes) == list(range(2000))
    assert all(outcome.ok for outcome in outcomes)
    for session, entries in expected_order(sessions, 2000).items():
        assert osvi_emulator.applied(session) == entries
    assert osvi_emulator.stats.peak_in_flight <= 32


async def test_faults_are_retried_without_loss_or_reordering(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """20% engine errors and 5% 503s: every item succeeds, once, in order per session."""
    osvi_emulator.fault_plan = FaultPlan(seed=3, engine_error=0.2, unavailable=0.05)
    sessions = [osvi_emulator.create_session() for _ in range(25)]
    # 13 attempts: the chance that one of the 1,000 items fails them all at 25% is 1.5e-5
    # (with 9 it was 0.4% a run, and a run in about 80 was seen to fail that way).
    patient = RetryPolicy(max_retries=12, initial_delay=0.001, max_delay=0.01)
    async with live_client.inject_many(
        spread(sessions, 1000), concurrency=16, retry=patient
    ) as run:
        outcomes = [outcome async for outcome in run]
    assert len(outcomes) == 1000
    assert all(outcome.ok for outcome in outcomes)
    for session, entries in expected_order(sessions, 1000).items():
        assert osvi_emulator.applied(session) == entries
    summary = run.summary
    assert (summary.items, summary.succeeded, summary.failed) == (1000, 1000, 0)
    assert summary.retries == sum(outcome.attempts - 1 for outcome in outcomes)
    assert summary.retries == osvi_emulator.stats.requests_total - 1000
    assert summary.retries > 0
    assert summary.throughput > 0


async def test_invalid_items_fail_alone(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """Blank contexts, bad ids and non-pairs are failed outcomes; their neighbours succeed."""
    session = osvi_emulator.create_session()
    items: list[object] = [
        (session, "first"),
        (session, "   "),
        ("../etc/passwd", "x"),
        42,
        InjectRequest(session_id=session, context="second"),
        (session, "third"),
    ]
    outcomes = sorted(await collect(live_client, items), key=lambda o: o.index)
    assert [outcome.ok for outcome in outcomes] == [True, False, False, False, True, True]
    assert all(isinstance(outcomes[i].error, ClientValidationError) for i in (1, 2, 3))
    assert outcomes[3].request is None
    assert outcomes[1].request == InjectRequest(session_id=session, context="   ")
    assert outcomes[1].attempts == 0
    assert osvi_emulator.applied(session) == ("first", "second", "third")


async def test_failed_items_are_reported_with_reason(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """A closed session's items fail with NotFoundError; other sessions are unaffected."""
    good, closed = osvi_emulator.create_session(), osvi_emulator.create_session()
    osvi_emulator.close_session(closed)
    outcomes = await collect(live_client, [(closed, "a"), (good, "b"), (closed, "c")])
    by_index = {outcome.index: outcome for outcome in outcomes}
    assert by_index[1].ok
    assert by_index[0].error is not None
    assert by_index[0].error.__class__.__name__ == "NotFoundError"
    assert by_index[2].error is not None
    assert osvi_emulator.applied(good) == ("b",)


async def test_async_iterable_input(live_client: OsviClient, osvi_emulator: OsviEmulator) -> None:
    """Items may come from an async generator."""
    session = osvi_emulator.create_session()

    async def produce() -> AsyncIterator[InjectRequest]:
        for i in range(20):
            await asyncio.sleep(0)
            yield InjectRequest(session_id=session, context=f"e{i}")

    outcomes = await collect(live_client, produce())
    assert len(outcomes) == 20
    assert osvi_emulator.applied(session) == tuple(f"e{i}" for i in range(20))


async def test_input_is_pulled_lazily(live_client: OsviClient, osvi_emulator: OsviEmulator) -> None:
    """The run never holds more than max_pending items pulled and not handed over."""
    sessions = [osvi_emulator.create_session() for _ in range(8)]
    pulled = 0
    handed_over = 0
    most_open = 0

    def produce() -> Iterator[tuple[str, str]]:
        nonlocal pulled, most_open
        for item in spread(sessions, 3000):
            pulled += 1
            most_open = max(most_open, pulled - handed_over)
            yield item

    async with live_client.inject_many(produce(), concurrency=8, max_pending=50) as run:
        async for _ in run:
            handed_over += 1
    assert handed_over == 3000
    assert most_open <= 51  # max_pending, plus the one being pulled


async def test_break_early_accounts_for_every_pulled_item(
    osvi_emulator: OsviEmulator,
) -> None:
    """Breaking out after 50 outcomes: received + leftovers == pulled; nothing left running."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=(0.001, 0.01))
    sessions = [osvi_emulator.create_session() for _ in range(30)]
    received: list[InjectOutcome] = []
    async with OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url) as client:
        async with client.inject_many(spread(sessions, 100_000), concurrency=16) as run:
            async for outcome in run:
                received.append(outcome)
                if len(received) == 50:
                    break
        summary = run.summary
        leftovers = run.leftovers
    indexes = sorted([o.index for o in received] + [o.index for o in leftovers])
    assert indexes == list(range(summary.items))
    assert summary.items < 1000  # the rest of the 100,000 were never pulled
    stopped = [o for o in leftovers if isinstance(o.error, RunStoppedError)]
    assert summary.not_sent + summary.interrupted == len(stopped)
    assert summary.interrupted <= 16
    assert summary.succeeded + summary.failed + len(stopped) == summary.items
    applied = sum(len(osvi_emulator.applied(s)) for s in sessions)
    sent_ok = sum(1 for o in [*received, *leftovers] if o.ok)
    assert sent_ok <= applied <= sent_ok + summary.interrupted
    await wait_until(lambda: osvi_emulator.stats.open_connections == 0)
    await wait_until(lambda: other_tasks() == set())


async def test_cancelling_the_consumer_stops_the_run(osvi_emulator: OsviEmulator) -> None:
    """Cancelling the task that iterates stops every worker; leftovers still account."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=0.02)
    sessions = [osvi_emulator.create_session() for _ in range(10)]
    received: list[InjectOutcome] = []
    async with OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url) as client:
        run = client.inject_many(spread(sessions, 10_000), concurrency=8)

        async def consume() -> None:
            async for outcome in run:
                received.append(outcome)

        task = asyncio.create_task(consume())
        await wait_until(lambda: len(received) >= 20)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    summary = run.summary
    assert len(received) + len(run.leftovers) == summary.items
    assert {o.index for o in received}.isdisjoint({o.index for o in run.leftovers})
    await wait_until(lambda: osvi_emulator.stats.open_connections == 0)
    await wait_until(lambda: other_tasks() == set())  # server-side handlers wind down too


async def test_outage_pauses_then_recovers(osvi_emulator: OsviEmulator) -> None:
    """A 1.5 s outage mid-run: the breaker holds sends, the run completes, nothing is lost."""
    sessions = [osvi_emulator.create_session() for _ in range(20)]
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=0.002)
    breaker = CircuitBreaker(failure_threshold=5, cooldown=0.1, max_cooldown=0.4)
    async with (
        OsviClient(
            osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=FAST_RETRY
        ) as client,
        client.inject_many(spread(sessions, 1500), concurrency=16, circuit_breaker=breaker) as run,
    ):
        outcomes: list[InjectOutcome] = []
        async for outcome in run:
            outcomes.append(outcome)
            if len(outcomes) == 300:
                osvi_emulator.fault_plan.outage(1.5)
    assert all(outcome.ok for outcome in outcomes)
    for session, entries in expected_order(sessions, 1500).items():
        assert osvi_emulator.applied(session) == entries
    failed_requests = osvi_emulator.stats.faults_injected["engine_error"]
    # Without the breaker every item sent during 1.5 s would fail 4 times; with it, only the
    # in-flight ones, the threshold and one probe per cool-down are spent on the outage.
    assert 5 <= failed_requests <= 16 * 4 + 20
    assert run.summary.retries == osvi_emulator.stats.requests_total - 1500


async def test_total_outage_costs_at_most_two_requests_per_item(
    osvi_emulator: OsviEmulator,
) -> None:
    """Everything fails (holding off): each item fails with a reason, <= 2 requests/item."""
    sessions = [osvi_emulator.create_session() for _ in range(10)]
    osvi_emulator.fault_plan.outage(3600)
    policy = RetryPolicy(max_retries=10, initial_delay=0.001, max_delay=0.005)
    breaker = CircuitBreaker(failure_threshold=5, cooldown=0.05, give_up_after=0.5)
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=policy
    ) as client:
        outcomes = await collect(
            client,
            spread(sessions, 200),
            concurrency=8,
            circuit_breaker=breaker,
            hold_on_failure=False,
        )
    assert len(outcomes) == 200
    assert not any(outcome.ok for outcome in outcomes)
    assert all(isinstance(o.error, EngineError | CircuitOpenError) for o in outcomes)
    assert osvi_emulator.stats.requests_total <= 2 * 200
    assert all(osvi_emulator.applied(s) == () for s in sessions)


async def test_budget_alone_bounds_a_total_outage(osvi_emulator: OsviEmulator) -> None:
    """With no breaker, the retry budget alone keeps an outage to <= 2 requests per item."""
    sessions = [osvi_emulator.create_session() for _ in range(10)]
    osvi_emulator.fault_plan.outage(3600)
    policy = RetryPolicy(max_retries=10, initial_delay=0.001, max_delay=0.002)
    async with (
        OsviClient(
            osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=policy
        ) as client,
        client.inject_many(spread(sessions, 100), concurrency=8, circuit_breaker=None) as run,
    ):
        outcomes = [outcome async for outcome in run]
    assert len(outcomes) == 100
    assert osvi_emulator.stats.requests_total <= 200
    assert run.summary.retries_refused > 0


async def test_without_budget_retries_follow_the_policy(osvi_emulator: OsviEmulator) -> None:
    """retry_budget=None and no breaker: each item gets all its max_retries (holding off)."""
    session = osvi_emulator.create_session()
    osvi_emulator.fault_plan.outage(3600)
    policy = RetryPolicy(max_retries=3, initial_delay=0.001, max_delay=0.002)
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=policy
    ) as client:
        outcomes = await collect(
            client,
            [(session, "a"), (session, "b")],
            retry_budget=None,
            circuit_breaker=None,
            hold_on_failure=False,
        )
    assert [outcome.attempts for outcome in outcomes] == [4, 4]
    assert osvi_emulator.stats.requests_total == 8


async def test_rate_limit_spaces_attempts(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """rate_limit=200 over 60 items takes at least 59/200 s."""
    sessions = [osvi_emulator.create_session() for _ in range(60)]
    started = time.monotonic()
    outcomes = await collect(live_client, spread(sessions, 60), rate_limit=200.0)
    elapsed = time.monotonic() - started
    assert len(outcomes) == 60
    assert elapsed >= 59 / 200 - 0.01


async def test_input_error_is_raised_after_earlier_items(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """If the input iterator raises, earlier items still finish, then the error surfaces."""
    session = osvi_emulator.create_session()

    def broken() -> Iterator[tuple[str, str]]:
        yield (session, "a")
        yield (session, "b")
        raise OSError("disk gone")

    received: list[InjectOutcome] = []
    with pytest.raises(OSError, match="disk gone"):  # noqa: PT012 - raised mid-iteration
        async for outcome in live_client.inject_many(broken()):
            received.append(outcome)
    assert len(received) == 2
    assert osvi_emulator.applied(session) == ("a", "b")


async def test_bad_arguments_raise_at_once(live_client: OsviClient) -> None:
    """Bad concurrency, rate or timeout raise ClientValidationError before anything runs."""
    with pytest.raises(ClientValidationError, match="concurrency"):
        live_client.inject_many([], concurrency=0)
    with pytest.raises(ClientValidationError, match="rate_limit"):
        live_client.inject_many([], rate_limit=-1.0)
    with pytest.raises(ClientValidationError, match="max_pending"):
        live_client.inject_many([], max_pending=0)
    with pytest.raises(ClientValidationError, match="RetryPolicy"):
        live_client.inject_many([], retry=RetryBudget())  # type: ignore[arg-type]


async def test_empty_input_finishes(live_client: OsviClient) -> None:
    """No items: the run ends at once with an empty summary."""
    async with live_client.inject_many([]) as run:
        assert [outcome async for outcome in run] == []
    assert run.summary.items == 0
    assert run.leftovers == ()
