"""The emulator's capacity model, judged from real HTTP requests and the emulator's records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest

from osvi_async.testing import CapacityModel, CapacityStats, FaultKind, FaultPlan, OsviEmulator
from tests.testing.helpers import Api, Reply, api_for, eventually


@asynccontextmanager
async def _capacity(model: CapacityModel | None) -> AsyncIterator[tuple[OsviEmulator, Api]]:
    """An emulator with ``model`` and a plain aiohttp caller with room for 200 connections."""
    async with OsviEmulator(capacity=model) as emulator:
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(base_url=emulator.base_url, connector=connector) as http:
            yield emulator, Api(http, emulator.api_token)


def _arrived(emulator: OsviEmulator, count: int) -> Callable[[], bool]:
    """Whether ``count`` inject_context requests have reached the emulator."""
    return lambda: emulator.requests("inject_context") == count


async def _burst(api: Api, session_id: str, count: int) -> list[Reply]:
    """Send ``count`` inject_context requests at once, entries "0".."count-1"."""
    calls = [api.inject(session_id, {"context": str(n)}) for n in range(count)]
    return list(await asyncio.gather(*calls))


async def test_never_serves_more_than_the_limit_at_once() -> None:
    """120 requests at once against limit 4: all served, never more than 4 in service."""
    model = CapacityModel(limit=4, service_time=0.01, queue_limit=1000)
    async with _capacity(model) as (emulator, api):
        session = emulator.create_session()
        replies = await _burst(api, session, 120)
        stats = emulator.capacity_stats()
        applied = emulator.applied(session)
    assert [reply.status for reply in replies] == [200] * 120
    assert (stats.served, stats.refused, stats.peak_in_service) == (120, 0, 4)
    assert stats.peak_waiting > 0
    assert stats.peak_concurrent == stats.peak_in_service + stats.peak_waiting
    assert sorted(applied, key=int) == [str(n) for n in range(120)]


async def test_waiting_requests_are_served_in_arrival_order() -> None:
    """With one slot, queued requests are served (and applied) in the order they arrived."""
    model = CapacityModel(limit=1, service_time=0.02, queue_limit=10)
    async with _capacity(model) as (emulator, api):
        session = emulator.create_session()
        calls = []
        for n in range(6):
            calls.append(asyncio.create_task(api.inject(session, {"context": str(n)})))
            await eventually(_arrived(emulator, n + 1))
            for _ in range(3):  # the request's own task takes its place in the queue
                await asyncio.sleep(0)
        replies = await asyncio.gather(*calls)
        applied = emulator.applied(session)
    assert [reply.status for reply in replies] == [200] * 6
    assert applied == tuple(str(n) for n in range(6))


async def test_refuses_exactly_what_the_queue_cannot_hold() -> None:
    """Limit 2 and queue 3 against 10 at once: 5 served, 5 refused with 429, none applied."""
    model = CapacityModel(limit=2, service_time=0.3, queue_limit=3)
    async with _capacity(model) as (emulator, api):
        session = emulator.create_session()
        replies = await _burst(api, session, 10)
        stats = emulator.capacity_stats()
        applied = emulator.applied(session)
        requests = emulator.requests("inject_context")
    served = [str(n) for n, reply in enumerate(replies) if reply.status == 200]
    refused = [reply for reply in replies if reply.status == 429]
    assert (len(served), len(refused), requests) == (5, 5, 10)
    assert (stats.served, stats.refused, stats.peak_in_service, stats.peak_waiting) == (5, 5, 2, 3)
    assert sorted(applied, key=int) == served
    assert {reply.headers["Retry-After"] for reply in refused} == {"1"}
    assert refused[0].json == {"success": False, "error": "rate_limited"}


async def test_429_refusals_are_the_rate_limited_fault_answer() -> None:
    """A 429 refusal has the RATE_LIMITED fault's status, body and content type."""
    async with _capacity(CapacityModel(limit=1, service_time=0.3)) as (emulator, api):
        session = emulator.create_session()
        replies = await _burst(api, session, 2)
        emulator.fault_plan = FaultPlan(rate_limited=1.0, retry_after_seconds=1)
        faulted = await api.inject(session, {"context": "x"})
    refused = [reply for reply in replies if reply.status == 429]
    assert len(refused) == 1
    assert (refused[0].text, refused[0].content_type) == (faulted.text, faulted.content_type)
    assert refused[0].headers["Retry-After"] == faulted.headers["Retry-After"] == "1"


async def test_503_refusals_are_the_proxy_page_with_retry_after() -> None:
    """refusal_status=503 answers the UNAVAILABLE fault's HTML page, with Retry-After."""
    model = CapacityModel(limit=1, service_time=0.3, refusal_status=503, retry_after=7)
    async with _capacity(model) as (emulator, api):
        session = emulator.create_session()
        first, refused = await _burst(api, session, 2)
        if first.status == 503:
            first, refused = refused, first
        emulator.fault_plan = FaultPlan(unavailable=1.0)
        faulted = await api.inject(session, {"context": "x"})
    assert (first.status, refused.status, faulted.status) == (200, 503, 503)
    assert refused.headers["Retry-After"] == "7"
    assert (refused.text, refused.content_type) == (faulted.text, "text/html")


async def test_retry_after_none_sends_no_header() -> None:
    """retry_after=None refuses without a Retry-After header."""
    model = CapacityModel(limit=1, service_time=0.3, retry_after=None)
    async with _capacity(model) as (emulator, api):
        replies = await _burst(api, emulator.create_session(), 2)
    refused = [reply for reply in replies if reply.status == 429]
    assert len(refused) == 1
    assert "Retry-After" not in refused[0].headers


async def test_unauthorised_requests_are_refused_before_the_gate() -> None:
    """A wrong token gets 401 and never reaches the capacity model."""
    async with _capacity(CapacityModel(limit=1)) as (emulator, api):
        reply = await api.inject(emulator.create_session(), {"context": "x"}, token="W" * 16)
        stats = emulator.capacity_stats()
    assert reply.status == 401
    assert stats == CapacityStats(limit=1)


async def test_other_endpoints_are_not_limited() -> None:
    """The default model covers inject_context only: create_session is never queued."""
    model = CapacityModel(limit=1, service_time=0.3)
    async with _capacity(model) as (emulator, api):
        bodies = [{"agent_uuid": "agent_A", "customer_id": f"c{n}"} for n in range(5)]
        replies = await asyncio.gather(*(api.create(body) for body in bodies))
        stats = emulator.capacity_stats()
    assert [reply.status for reply in replies] == [200] * 5
    assert stats.served == 0


async def test_a_rising_schedule_step_starts_waiters_at_once() -> None:
    """When the limit rises from 1 to 3, the two waiters start before the first one ends."""
    model = CapacityModel(limit=1, service_time=0.5, queue_limit=5, schedule=((0.05, 3),))
    async with _capacity(model) as (emulator, api):
        replies = await _burst(api, emulator.create_session(), 3)
        stats = emulator.capacity_stats()
    assert [reply.status for reply in replies] == [200] * 3
    assert (stats.peak_in_service, stats.limit) == (3, 3)


async def test_timeline_follows_a_schedule_that_lowers_then_raises_the_limit() -> None:
    """Limit 4, then 1 during second 1, then 4: the timeline's limits and admissions follow."""
    model = CapacityModel(
        limit=4, service_time=0.04, queue_limit=100, schedule=((1.0, 1), (2.0, 4))
    )
    async with _capacity(model) as (emulator, api):
        session = emulator.create_session()
        statuses: list[int] = []

        async def client() -> None:
            while len(emulator.capacity_stats().timeline) < 4:
                statuses.append((await api.inject(session, {"context": "x"})).status)

        await asyncio.gather(*(client() for _ in range(8)))
        stats = emulator.capacity_stats()
    timeline = stats.timeline[:3]
    assert [second.limit for second in timeline] == [4, 1, 4]
    assert statuses == [200] * len(statuses)
    assert sum(second.served for second in stats.timeline) == stats.served == len(statuses)
    assert stats.peak_in_service == 4
    assert max(second.peak_concurrent for second in timeline) == 8  # the clients, all waiting
    # One slot serving 40 ms requests admits at most 25 in a second (+1 at its edge); four
    # slots admit more than that.
    assert timeline[1].served <= 26 < min(timeline[0].served, timeline[2].served)


async def test_a_client_that_hangs_up_keeps_its_place_and_is_applied() -> None:
    """A request whose client gave up while waiting is still served, then applied."""
    model = CapacityModel(limit=1, service_time=0.1, queue_limit=5)
    async with _capacity(model) as (emulator, api):
        session = emulator.create_session()
        first = asyncio.create_task(api.inject(session, {"context": "first"}))
        await eventually(lambda: emulator.capacity_stats().served == 1)
        with pytest.raises(TimeoutError):
            await api.inject(session, {"context": "gave up"}, timeout=0.02)
        third = await api.inject(session, {"context": "third"})
        await first
        stats = emulator.capacity_stats()
        applied = emulator.applied(session)
    assert applied == ("first", "gave up", "third")
    assert (third.status, stats.served, stats.peak_waiting) == (200, 3, 2)


async def test_a_dropped_request_whose_client_left_while_waiting_ends() -> None:
    """Served after its client left, an ambiguous_drop request is applied and then just ends."""
    model = CapacityModel(limit=1, service_time=0.1, queue_limit=5)
    async with _capacity(model) as (emulator, api):
        session = emulator.create_session()
        emulator.fault_plan.script(session, [None, FaultKind.AMBIGUOUS_DROP])
        first = asyncio.create_task(api.inject(session, {"context": "first"}))
        await eventually(lambda: emulator.capacity_stats().served == 1)
        with pytest.raises(TimeoutError):
            await api.inject(session, {"context": "dropped"}, timeout=0.02)
        await first
        await eventually(lambda: emulator.applied(session) == ("first", "dropped"))
        after = await api.inject(session, {"context": "after"})
        stats = emulator.capacity_stats()
    assert after.status == 200
    assert stats.served == 3
    assert emulator.stats.faults_injected[FaultKind.AMBIGUOUS_DROP] == 1


async def test_hanging_up_after_the_gate_cancels_the_request() -> None:
    """A client that leaves during the fault plan's latency (past the gate) is not applied."""
    model = CapacityModel(limit=1, service_time=0.01)
    plan = FaultPlan(latency=1.0, latency_seconds=0.3)
    async with _capacity(model) as (emulator, api):
        emulator.fault_plan = plan
        session = emulator.create_session()
        with pytest.raises(TimeoutError):
            await api.inject(session, {"context": "left"}, timeout=0.1)
        await eventually(lambda: emulator.stats.in_flight == 0)
        await asyncio.sleep(0.4)  # past the latency: a request still running would be applied
        stats = emulator.capacity_stats()
        applied = emulator.applied(session)
    assert (stats.served, applied) == (1, ())


async def test_replacing_the_model_starts_a_fresh_state() -> None:
    """A model assigned while running starts at zero; None removes the limit."""
    async with _capacity(CapacityModel(limit=8, service_time=0.01)) as (emulator, api):
        session = emulator.create_session()
        await _burst(api, session, 3)
        assert emulator.capacity_stats().served == 3
        emulator.capacity = CapacityModel(limit=2, service_time=0.3)
        assert emulator.capacity_stats() == CapacityStats(limit=2)
        replies = await _burst(api, session, 3)
        stats = emulator.capacity_stats()
        emulator.capacity = None
        unlimited = await _burst(api, session, 5)
        assert emulator.capacity is None
        assert emulator.capacity_stats() == CapacityStats()
    assert sorted(reply.status for reply in replies) == [200, 200, 429]
    assert (stats.served, stats.refused, stats.limit) == (2, 1, 2)
    assert [reply.status for reply in unlimited] == [200] * 5


async def test_stop_releases_waiting_and_served_requests() -> None:
    """Stopping drops requests in service and waiting: none is applied, stop returns."""
    emulator = OsviEmulator(capacity=CapacityModel(limit=1, service_time=60.0, queue_limit=5))
    await emulator.start()
    session = emulator.create_session()
    async with api_for(emulator) as api:
        calls = [asyncio.create_task(api.inject(session, {"context": str(n)})) for n in range(3)]
        await eventually(_arrived(emulator, 3))
        async with asyncio.timeout(10):
            await emulator.stop()
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(result, aiohttp.ClientError) for result in results), results
    assert emulator.applied(session) == ()


def test_stats_are_zero_without_a_model() -> None:
    """Without a model the stats are zeros and an empty timeline."""
    assert OsviEmulator().capacity_stats() == CapacityStats()
    assert OsviEmulator(capacity=CapacityModel(limit=3)).capacity_stats() == CapacityStats(limit=3)
