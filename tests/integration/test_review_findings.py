"""Regressions for problems a review found: each test failed before its fix."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Iterator

import aiohttp
import pytest

from osvi_async import (
    APIConnectionError,
    APITimeoutError,
    CircuitBreaker,
    InjectOutcome,
    NotFoundError,
    OsviClient,
    OsviError,
    RetryPolicy,
    RunStoppedError,
)
from osvi_async.testing import FaultPlan, OsviEmulator
from tests.integration.test_client_live import wait_until
from tests.support import exception_chain


async def test_early_stop_accounts_for_every_item_the_generator_yielded(
    osvi_emulator: OsviEmulator,
) -> None:
    """Items taken from the caller's iterator are all outcomes or leftovers, none stranded."""
    sessions = [osvi_emulator.create_session() for _ in range(4)]
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=0.005)
    yielded: list[int] = []

    def produce() -> Iterator[tuple[str, str]]:
        for i in range(10_000):
            yielded.append(i)
            yield (sessions[i % 4], f"e{i}")

    received: list[InjectOutcome] = []
    client = OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url)
    async with client, client.inject_many(produce(), concurrency=4, max_pending=8) as run:
        async for outcome in run:
            received.append(outcome)
            if len(received) == 3:
                break
    accounted = sorted([o.index for o in received] + [o.index for o in run.leftovers])
    assert accounted == yielded
    assert run.summary.items == len(yielded)


async def test_second_cancel_during_cleanup_keeps_leftovers(osvi_emulator: OsviEmulator) -> None:
    """Cancelling the consumer twice still leaves leftovers for every pulled item."""
    sessions = [osvi_emulator.create_session() for _ in range(10)]
    osvi_emulator.fault_plan = FaultPlan(hang=1.0)
    async with OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url) as client:
        run = client.inject_many(((sessions[i % 10], "x") for i in range(100)), concurrency=10)

        async def consume() -> None:
            async for _ in run:
                pass

        task = asyncio.create_task(consume())
        await wait_until(lambda: osvi_emulator.stats.in_flight == 10)
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await run.aclose()
    assert run.summary.items == len(run.leftovers) > 0
    assert {type(o.error) for o in run.leftovers} == {RunStoppedError}


async def test_aclose_from_another_task_stops_the_run(osvi_emulator: OsviEmulator) -> None:
    """A watchdog task can stop a run that another task is iterating."""
    sessions = [osvi_emulator.create_session() for _ in range(5)]
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=0.01)
    async with OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url) as client:
        run = client.inject_many(((sessions[i % 5], "x") for i in range(100_000)), concurrency=5)
        received: list[InjectOutcome] = []

        async def consume() -> None:
            async for outcome in run:
                received.append(outcome)

        consumer = asyncio.create_task(consume())
        await wait_until(lambda: len(received) >= 10)
        await run.aclose()
        await asyncio.wait_for(consumer, 2.0)  # the iteration ends on its own
    assert len(received) + len(run.leftovers) == run.summary.items
    assert run.summary.items < 1000


async def test_breaker_recovers_after_giving_up(osvi_emulator: OsviEmulator) -> None:
    """After give_up_after, probing goes on, and items after the recovery succeed."""
    sessions = [osvi_emulator.create_session() for _ in range(4)]
    osvi_emulator.fault_plan.outage(0.6)
    breaker = CircuitBreaker(
        failure_threshold=2, cooldown=0.05, max_cooldown=0.1, give_up_after=0.2
    )
    policy = RetryPolicy(max_retries=1, initial_delay=0.001)
    pulled_late = 0

    async def produce() -> object:
        nonlocal pulled_late
        for i in range(40):
            if i == 20:
                await asyncio.sleep(1.0)  # the outage is over by now
            if i >= 20:
                pulled_late += 1
            yield (sessions[i % 4], f"e{i}")

    async with (
        OsviClient(
            osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=policy
        ) as client,
        client.inject_many(
            produce(),  # type: ignore[arg-type]
            concurrency=4,
            circuit_breaker=breaker,
            hold_on_failure=False,  # items failed during the outage would hold the late ones
        ) as run,
    ):
        outcomes = [outcome async for outcome in run]
    late = [o for o in outcomes if o.index >= 20]
    assert pulled_late == 20
    assert all(o.ok for o in late)


async def test_breaker_opens_under_an_at_most_once_policy(osvi_emulator: OsviEmulator) -> None:
    """Dropped connections open the breaker even when the policy does not retry them."""
    sessions = [osvi_emulator.create_session() for _ in range(20)]
    osvi_emulator.fault_plan.outage(3600, kind="ambiguous_drop")
    policy = RetryPolicy(retry_connection_errors=False, retry_timeouts=False)
    breaker = CircuitBreaker(failure_threshold=10, cooldown=0.05, give_up_after=0.3)
    async with (
        OsviClient(
            osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=policy
        ) as client,
        client.inject_many(
            ((sessions[i % 20], "x") for i in range(400)), concurrency=8, circuit_breaker=breaker
        ) as run,
    ):
        outcomes = [outcome async for outcome in run]
    assert len(outcomes) == 400
    assert osvi_emulator.stats.requests_total < 100  # without the breaker: 400


@pytest.mark.aiohttp_only  # borrows an aiohttp session
async def test_borrowed_session_raising_for_status_still_maps_statuses(
    osvi_emulator: OsviEmulator,
) -> None:
    """A caller's session with raise_for_status=True: a 404 is NotFoundError, not retried."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.close_session(session_id)
    async with aiohttp.ClientSession(raise_for_status=True) as own:
        client = OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url, session=own)
        with pytest.raises(NotFoundError) as caught:
            await client.inject_context(session_id, "x")
    assert caught.value.attempts == 1
    assert osvi_emulator.requests_for(session_id) == 1


async def test_token_not_reachable_through_the_exception_chain() -> None:
    """A garbage answer is an APIConnectionError whose whole chain is free of the token."""
    token = "SeCrEtToKeN12345"

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(b"NOT-HTTP garbage\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with OsviClient(
            token, base_url=f"http://127.0.0.1:{port}", retry=RetryPolicy.none()
        ) as client:
            with pytest.raises(APIConnectionError) as caught:
                await client.inject_context("4718a326-417b-4dda-90d0-21fd65a11cb8", "x")
    finally:
        server.close()
        await server.wait_closed()
    for link in exception_chain(caught.value):
        assert token not in repr(link)
        assert token not in str(link)
        assert token not in repr(getattr(link, "request_info", ""))


async def test_timeout_waiting_for_a_connection_is_not_sent(osvi_emulator: OsviEmulator) -> None:
    """With the only connection held by a hanging call, the next one times out unsent."""
    first, second = osvi_emulator.create_session(), osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(first, ["hang"])
    async with OsviClient(
        osvi_emulator.api_token,
        base_url=osvi_emulator.base_url,
        max_connections=1,
        timeout=0.5,
        retry=RetryPolicy.none(),
    ) as client:
        hanging = asyncio.create_task(client.inject_context(first, "x"))
        await wait_until(lambda: osvi_emulator.stats.in_flight == 1)
        with pytest.raises(APITimeoutError) as caught:
            await client.inject_context(second, "y")
        hanging.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hanging
    assert caught.value.request_sent is False
    assert osvi_emulator.requests_for(second) == 0


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_client_reused_in_a_second_event_loop_is_a_typed_error() -> None:
    """Using one client from two asyncio.run() calls raises OsviError, not RuntimeError."""
    emulator_ready = threading.Event()
    stop = threading.Event()
    where: dict[str, object] = {}

    def serve() -> None:
        async def main() -> None:
            async with OsviEmulator() as emulator:
                where["emulator"] = emulator
                where["session"] = emulator.create_session()
                emulator_ready.set()
                await asyncio.to_thread(stop.wait)

        asyncio.run(main())

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert emulator_ready.wait(10)
        emulator = where["emulator"]
        assert isinstance(emulator, OsviEmulator)
        session = str(where["session"])
        client = OsviClient(emulator.api_token, base_url=emulator.base_url)
        asyncio.run(client.inject_context(session, "first loop"))
        with pytest.raises(OsviError, match="another event loop"):
            asyncio.run(client.inject_context(session, "second loop"))
        client._owns_transport = False  # its pool died with the first loop; nothing to close
        del client
        gc.collect()  # the dead loop's sockets warn here, inside this test's filters
    finally:
        stop.set()
        thread.join(10)


async def test_view_keeps_its_origin_alive(osvi_emulator: OsviEmulator) -> None:
    """A view made from a temporary client keeps that client, and so its pool, reachable."""
    origin = OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url)
    view = origin.with_options(timeout=5.0)
    ref = weakref.ref(origin)
    del origin
    gc.collect()
    assert ref() is not None
    await view.inject_context(osvi_emulator.create_session(), "x")
    live = ref()
    assert live is not None
    await live.close()
    assert view.closed


async def test_lanes_ignore_session_id_case(osvi_emulator: OsviEmulator) -> None:
    """Upper- and lower-case spellings of one id share a lane: applied in input order."""
    session = osvi_emulator.create_session()
    osvi_emulator.fault_plan = FaultPlan(seed=5, latency=1.0, latency_seconds=(0.0, 0.01))
    spellings = [session, session.upper()]
    items = [(spellings[i % 2], f"e{i}") for i in range(40)]
    client = OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url)
    async with client, client.inject_many(items, concurrency=8) as run:
        outcomes = [outcome async for outcome in run]
    assert all(outcome.ok for outcome in outcomes)
    assert osvi_emulator.applied(session) == tuple(f"e{i}" for i in range(40))


async def test_items_held_by_the_breaker_are_reported_unsent(osvi_emulator: OsviEmulator) -> None:
    """Stopping while items wait for an open circuit reports them as never sent."""
    sessions = [osvi_emulator.create_session() for _ in range(8)]
    osvi_emulator.fault_plan.outage(3600)
    breaker = CircuitBreaker(failure_threshold=2, cooldown=30.0)
    policy = RetryPolicy(max_retries=0)
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=policy
    ) as client:
        run = client.inject_many(
            ((sessions[i % 8], "x") for i in range(40)),
            concurrency=8,
            circuit_breaker=breaker,
            hold_on_failure=False,  # else the failed first items hold the rest of the sessions
        )
        received: list[InjectOutcome] = []
        async with run:
            async for outcome in run:
                received.append(outcome)
                if run.circuit_state == "open" and len(received) >= 2:
                    break
    # Items waiting at the open circuit were never sent; at most the few whose request was
    # on the wire when the run stopped count as interrupted.
    everything = received + list(run.leftovers)
    finished_attempts = sum(
        o.attempts
        for o in everything
        if o.error is None or not isinstance(o.error, RunStoppedError)
    )
    all_attempts = sum(o.attempts for o in everything)
    assert run.summary.not_sent > 0
    assert all_attempts - finished_attempts == run.summary.interrupted
    assert finished_attempts <= osvi_emulator.stats.requests_total <= all_attempts
    assert len(everything) == run.summary.items


async def test_deadline_spent_waiting_is_not_a_send(osvi_emulator: OsviEmulator) -> None:
    """If the breaker holds an attempt past the deadline, it is not sent at all."""
    session = osvi_emulator.create_session()
    others = [osvi_emulator.create_session() for _ in range(3)]
    osvi_emulator.fault_plan.outage(3600)
    breaker = CircuitBreaker(failure_threshold=3, cooldown=0.5)
    policy = RetryPolicy(deadline=0.3, initial_delay=0.001)
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=policy
    ) as client:
        items = [(s, "x") for s in others] + [(session, "late")]
        async with client.inject_many(items, concurrency=4, circuit_breaker=breaker) as run:
            outcomes = {o.index: o async for o in run}
    late = outcomes[3]
    assert isinstance(late.error, APITimeoutError)
    assert late.error.request_sent is False
    assert late.error.attempts == 1
    assert osvi_emulator.requests_for(session) == 1
    assert run.circuit_state == "open"  # the unsent probe gave the circuit back


async def test_stopped_after_certain_failures_is_not_maybe_applied(
    osvi_emulator: OsviEmulator,
) -> None:
    """An item stopped in its backoff after a 429 (never applied) is reported as such."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.fault_plan = FaultPlan(rate_limited=1.0, retry_after_seconds=5)
    client = OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url)
    async with client:
        run = client.inject_many([(session_id, "hello")], circuit_breaker=None)

        async def consume() -> None:
            async for _ in run:
                pass

        consumer = asyncio.create_task(consume())
        await wait_until(lambda: osvi_emulator.requests_for(session_id) == 1)
        await asyncio.sleep(0.05)  # the 429 is read; the item sleeps in its backoff
        await run.aclose()
        await consumer
    [leftover] = run.leftovers
    assert isinstance(leftover.error, RunStoppedError)
    assert leftover.error.may_have_been_applied is False
    assert leftover.error.request_sent is False
    assert leftover.error.attempts == 1
    assert osvi_emulator.applied(session_id) == ()
