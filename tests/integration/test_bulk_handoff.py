"""The run's hand-offs: an item admitted while workers are idle goes straight to one of them.

An input slower than the workers (a queue, a lock-step producer) leaves every worker idle, so
each item takes the direct hand-off instead of the ready deque. These tests pin what must
still hold on that path: per-session input order, a stop right after a hand-off (before the
worker woke) sends nothing and accounts for the item, and a cancel leaves no task behind.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

from osvi_async import InjectOutcome, OsviClient, RunStoppedError
from osvi_async.testing import FaultPlan, OsviEmulator


def _numbers(emulator: OsviEmulator, session: str) -> list[int]:
    return [int(text.split()[-1]) for text in emulator.applied(session)]


async def test_lock_step_input_goes_to_idle_workers_one_item_at_a_time(
    osvi_emulator: OsviEmulator, live_client: OsviClient
) -> None:
    """An input that waits for each outcome is served by idle workers, in order, to the end."""
    session = osvi_emulator.create_session()
    answered = asyncio.Event()

    async def lock_step() -> AsyncIterator[tuple[str, str]]:
        for number in range(30):
            answered.clear()
            yield session, f"entry {number}"
            await answered.wait()  # every worker is idle when the next item comes

    outcomes: list[InjectOutcome] = []
    async with live_client.inject_many(lock_step(), concurrency=8) as run:
        async for outcome in run:
            outcomes.append(outcome)
            answered.set()
    assert [outcome.index for outcome in outcomes] == list(range(30))
    assert all(outcome.ok for outcome in outcomes)
    assert _numbers(osvi_emulator, session) == list(range(30))
    assert run.summary.succeeded == 30


async def test_many_writers_on_one_session_keep_input_order_on_both_paths(
    osvi_emulator: OsviEmulator, live_client: OsviClient
) -> None:
    """A hot session among many, input in bursts and trickles: each session in input order."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=(0.0, 0.004))
    hot = osvi_emulator.create_session()
    others = [osvi_emulator.create_session() for _ in range(20)]
    rng = random.Random(12)
    plan = [hot if rng.random() < 0.4 else rng.choice(others) for _ in range(400)]

    async def bursts_and_trickles() -> AsyncIterator[tuple[str, str]]:
        for number, session in enumerate(plan):
            if rng.random() < 0.1:
                await asyncio.sleep(rng.choice((0, 0.001, 0.005)))  # workers run dry
            yield session, f"entry {number}"

    async with live_client.inject_many(bursts_and_trickles(), concurrency=32) as run:
        outcomes = [outcome async for outcome in run]
    assert sorted(outcome.index for outcome in outcomes) == list(range(400))
    assert all(outcome.ok for outcome in outcomes)
    for session in [hot, *others]:
        expected = [number for number, target in enumerate(plan) if target == session]
        assert _numbers(osvi_emulator, session) == expected


async def test_drain_at_once_right_after_a_hand_off_sends_nothing(
    osvi_emulator: OsviEmulator, live_client: OsviClient
) -> None:
    """drain(0) before the worker handed an item wakes: item stopped unsent, no request."""
    session = osvi_emulator.create_session()
    run = live_client.inject_many(_stop_after_first(session, lambda: run.drain(0)))
    async with run:
        outcomes = [outcome async for outcome in run]
    assert outcomes == []
    [leftover] = run.leftovers
    assert isinstance(leftover.error, RunStoppedError)
    assert leftover.error.request_sent is False
    assert (run.summary.items, run.summary.not_sent, run.summary.interrupted) == (1, 1, 0)
    await asyncio.sleep(0.05)
    assert osvi_emulator.applied(session) == ()
    assert osvi_emulator.stats.requests_total == 0


async def test_graceful_drain_right_after_a_hand_off_sends_nothing(
    osvi_emulator: OsviEmulator, live_client: OsviClient
) -> None:
    """drain() before the handed item's first attempt: no attempt starts, certainly unsent."""
    session = osvi_emulator.create_session()
    run = live_client.inject_many(_stop_after_first(session, lambda: run.drain(5.0)))
    async with run:
        outcomes = [outcome async for outcome in run]
    assert outcomes == []
    [leftover] = run.leftovers
    assert isinstance(leftover.error, RunStoppedError)
    assert leftover.error.request_sent is False
    assert leftover.error.may_have_been_applied is False
    assert (run.summary.items, run.summary.not_sent) == (1, 1)
    assert osvi_emulator.stats.requests_total == 0


async def _stop_after_first(
    session: str, stop: Callable[[], None]
) -> AsyncIterator[tuple[str, str]]:
    """Yield one item; when asked for the next, the run has just handed the first to an idle
    worker that has not run yet: call `stop` there, then end."""
    await asyncio.sleep(0)  # the workers start after the feeder: let them all go idle first
    yield session, "entry 0"
    stop()


async def test_cancelling_the_consumer_while_workers_idle_leaves_no_task(
    osvi_emulator: OsviEmulator, live_client: OsviClient
) -> None:
    """Cancel while every worker waits for input: tasks end, every pulled item accounted."""
    session = osvi_emulator.create_session()
    more = asyncio.Event()

    async def stalls() -> AsyncIterator[tuple[str, str]]:
        for number in range(3):
            yield session, f"entry {number}"
        await more.wait()  # never set: the workers idle, the consumer waits
        yield session, "never pulled"

    run = live_client.inject_many(stalls(), concurrency=4)
    seen: list[InjectOutcome] = []
    three = asyncio.Event()

    async def consume() -> None:
        async with run:
            async for outcome in run:
                seen.append(outcome)
                if len(seen) == 3:
                    three.set()

    consumer = asyncio.create_task(consume())
    await three.wait()
    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)
    assert consumer.cancelled()
    assert [task for task in asyncio.all_tasks() if task.get_name().startswith("osvi-bulk")] == []
    assert [outcome.index for outcome in seen] == [0, 1, 2]
    assert run.summary.items == run.summary.succeeded == 3
    assert _numbers(osvi_emulator, session) == [0, 1, 2]
