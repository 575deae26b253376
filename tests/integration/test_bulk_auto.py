"""`inject_many(concurrency="auto")` against the emulator's capacity model, on real sockets.

The server counts what it saw (peak requests at once, refusals), so these tests check the
limit where it matters: at the API, not in the client's own bookkeeping.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from osvi_async import ClientValidationError, InjectOutcome, OsviClient, RetryPolicy
from osvi_async.testing import CapacityModel, OsviEmulator

# Refusals come with Retry-After: 0 here; backoffs of tens of milliseconds let the API's
# queue move before a refused item comes back, as Retry-After: 1 would in real life.
PATIENT_RETRY = RetryPolicy(max_retries=8, initial_delay=0.02, max_delay=0.1)


def _items(sessions: list[str], count: int) -> list[tuple[str, str]]:
    return [(sessions[n % len(sessions)], f"entry {n}") for n in range(count)]


def _in_input_order(emulator: OsviEmulator, sessions: list[str]) -> bool:
    return all(
        [int(text.split()[-1]) for text in emulator.applied(session)]
        == sorted(int(text.split()[-1]) for text in emulator.applied(session))
        for session in sessions
    )


@pytest_asyncio.fixture
async def patient_client(osvi_emulator: OsviEmulator) -> AsyncIterator[OsviClient]:
    """A client that outlasts a burst of refusals."""
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=PATIENT_RETRY
    ) as client:
        yield client


async def test_auto_finds_the_capacity_without_passing_its_maximum(
    osvi_emulator: OsviEmulator, patient_client: OsviClient
) -> None:
    """Against 12 served at once (and 6 queued), auto starts at 8, grows, and settles near
    12: every item lands, each session in order, never more than max_concurrency at the API."""
    osvi_emulator.capacity = CapacityModel(
        limit=12, service_time=0.02, jitter=0.2, queue_limit=6, retry_after=0
    )
    sessions = [osvi_emulator.create_session() for _ in range(200)]
    limits: list[int] = []
    async with patient_client.inject_many(
        _items(sessions, 1200), concurrency="auto", max_concurrency=40
    ) as run:
        async for outcome in run:
            assert outcome.ok, outcome.error
            limits.append(run.concurrency_limit)
    stats = osvi_emulator.capacity_stats()
    assert run.summary.succeeded == 1200
    assert run.summary.concurrency_limit == limits[-1]
    assert stats.peak_concurrent <= 40
    assert max(limits) > 8  # it grew from where it started
    # Settled near what the API holds (12 served, 6 waiting): the refusals of slow start's
    # overshoot (16 to 32 against 12 + 6) all fall in the first second, none after it.
    assert 6 <= limits[-1] <= 12 + 6 + 4, limits[-200:]
    assert len(stats.timeline) >= 2, stats.timeline
    assert [second.refused for second in stats.timeline[1:]] == [0] * (len(stats.timeline) - 1)
    assert _in_input_order(osvi_emulator, sessions)


async def test_an_api_that_refuses_without_queueing_is_found_by_its_refusals(
    osvi_emulator: OsviEmulator, patient_client: OsviClient
) -> None:
    """Capacity 4 and no queue: no latency warning at all, only 429s. The first burst gives
    the level, and the run keeps under it: few refusals, no item lost, held or failed."""
    osvi_emulator.capacity = CapacityModel(limit=4, service_time=0.01, queue_limit=0, retry_after=0)
    sessions = [osvi_emulator.create_session() for _ in range(100)]
    async with patient_client.inject_many(
        _items(sessions, 1000), concurrency="auto", max_concurrency=64
    ) as run:
        outcomes = [outcome async for outcome in run]
    stats = osvi_emulator.capacity_stats()
    assert all(outcome.ok for outcome in outcomes)
    assert stats.served == 1000
    assert stats.refused < 0.05 * stats.served, stats.refused
    assert run.summary.concurrency_limit <= 4
    assert _in_input_order(osvi_emulator, sessions)


async def test_auto_never_sends_more_than_max_concurrency(
    osvi_emulator: OsviEmulator, live_client: OsviClient
) -> None:
    """With room for 100 at the API, a maximum of 3 is what the API sees at most."""
    osvi_emulator.capacity = CapacityModel(limit=100, service_time=0.005, queue_limit=0)
    sessions = [osvi_emulator.create_session() for _ in range(50)]
    async with live_client.inject_many(
        _items(sessions, 300), concurrency="auto", max_concurrency=3
    ) as run:
        outcomes = [outcome async for outcome in run]
    assert all(outcome.ok for outcome in outcomes)
    assert osvi_emulator.capacity_stats().peak_concurrent == 3
    assert run.summary.concurrency_limit == 3


async def test_auto_backs_off_when_the_capacity_halves(
    osvi_emulator: OsviEmulator, patient_client: OsviClient
) -> None:
    """Capacity 24 drops to 8 mid-run: refusals make the limit fall below 24, and the run still
    lands every item in order (the refused ones retried)."""
    osvi_emulator.capacity = CapacityModel(
        limit=24,
        service_time=0.02,
        queue_limit=2,
        retry_after=0,
        schedule=((0.6, 8),),
    )
    sessions = [osvi_emulator.create_session() for _ in range(300)]
    limits: list[int] = []
    async with patient_client.inject_many(
        _items(sessions, 1500), concurrency="auto", max_concurrency=64
    ) as run:
        async for outcome in run:
            assert outcome.ok, outcome.error
            limits.append(run.concurrency_limit)
    assert max(limits) >= 16
    assert limits[-1] <= 8 + 2 + 6  # the new capacity, its queue, and at most beta above
    assert _in_input_order(osvi_emulator, sessions)


async def test_a_drain_of_an_auto_run_accounts_for_every_item(
    osvi_emulator: OsviEmulator, live_client: OsviClient
) -> None:
    """Items waiting for an adaptive slot end as not sent, those on the wire finish."""
    osvi_emulator.capacity = CapacityModel(limit=4, service_time=0.05, queue_limit=100)
    sessions = [osvi_emulator.create_session() for _ in range(100)]
    outcomes: list[InjectOutcome] = []
    async with live_client.inject_many(
        _items(sessions, 400), concurrency="auto", max_concurrency=64
    ) as run:
        async for outcome in run:
            outcomes.append(outcome)
            if len(outcomes) == 20:
                run.drain(grace=5.0)
    summary = run.summary
    assert summary.items == (
        summary.succeeded + summary.failed + summary.held + summary.not_sent + summary.interrupted
    )
    assert summary.not_sent > 0
    assert summary.interrupted == 0
    applied = sum(len(osvi_emulator.applied(session)) for session in sessions)
    assert applied == summary.succeeded == len(outcomes)
    assert {outcome.index for outcome in outcomes}.isdisjoint(
        outcome.index for outcome in run.leftovers
    )


async def test_cancelling_an_auto_run_while_attempts_wait_for_slots_leaves_nothing_behind(
    osvi_emulator: OsviEmulator, live_client: OsviClient
) -> None:
    """A cancel that lands while most workers wait for a slot ends every task."""
    osvi_emulator.capacity = CapacityModel(limit=2, service_time=0.2, queue_limit=100)
    sessions = [osvi_emulator.create_session() for _ in range(64)]
    run = live_client.inject_many(_items(sessions, 64), concurrency="auto", max_concurrency=64)
    before = asyncio.all_tasks()

    async def consume() -> None:
        async for _ in run:
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    left = {task.get_name() for task in asyncio.all_tasks() - before}
    assert not {name for name in left if name.startswith("osvi-bulk")}
    leftovers = run.leftovers
    assert len(leftovers) == 64
    assert sum(not outcome.error.request_sent for outcome in leftovers) >= 56  # type: ignore[union-attr]


async def test_auto_takes_no_more_sessions_at_once_than_input_order_allows(
    osvi_emulator: OsviEmulator, live_client: OsviClient
) -> None:
    """One hot session and a few others: never two of a session's entries at once."""
    osvi_emulator.capacity = CapacityModel(limit=50, service_time=0.005)
    hot = osvi_emulator.create_session()
    others = [osvi_emulator.create_session() for _ in range(5)]
    items = [(hot if n % 2 else others[n % 5], f"entry {n}") for n in range(300)]
    seen: dict[str, list[int]] = defaultdict(list)
    async with live_client.inject_many(items, concurrency="auto") as run:
        async for outcome in run:
            assert outcome.ok
            seen[items[outcome.index][0]].append(outcome.index)
    assert all(indexes == sorted(indexes) for indexes in seen.values())
    assert _in_input_order(osvi_emulator, [hot, *others])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 8, "max_concurrency": 16}, "max_concurrency applies only"),
        ({"concurrency": "fast"}, "concurrency must be an int or \"auto\", got 'fast'"),
        ({"concurrency": "auto", "max_concurrency": 0}, "max_concurrency must be >= 1"),
        ({"concurrency": "auto", "max_concurrency": 2.5}, "max_concurrency must be an int"),
    ],
)
async def test_bad_concurrency_options_are_refused_before_anything_runs(
    osvi_emulator: OsviEmulator,
    live_client: OsviClient,
    options: dict[str, object],
    message: str,
) -> None:
    """Each mistake is a ClientValidationError naming the option; nothing reaches the API."""
    with pytest.raises(ClientValidationError, match=message.replace("(", r"\(")):
        live_client.inject_many([("s", "x")], **options)  # type: ignore[arg-type]
    assert osvi_emulator.requests("inject_context") == 0
