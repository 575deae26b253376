"""FaultPlan: each failure does what it says, reproducibly, and the server counts what it saw."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from osvi_async.testing import FaultDecision, FaultKind, FaultPlan, ManualClock, OsviEmulator
from tests.testing.helpers import Api, eventually

ENGINE_ERROR_BODY = {"success": False, "error": "Python engine unreachable", "upstream_body": None}


def _count(emulator: OsviEmulator, kind: FaultKind) -> int:
    return emulator.stats.faults_injected[kind]


# --- Each kind ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [
        (FaultKind.ENGINE_ERROR, 502, "application/json"),
        (FaultKind.ENGINE_REJECTED, 502, "application/json"),
        (FaultKind.PROXY_HTML_502, 502, "text/html"),
        (FaultKind.UNAVAILABLE, 503, "text/html"),
        (FaultKind.GATEWAY_TIMEOUT, 504, "text/html"),
        (FaultKind.RATE_LIMITED, 429, "application/json"),
    ],
)
async def test_failures_that_apply_nothing(
    api: Api,
    osvi_emulator: OsviEmulator,
    osvi_session_id: str,
    kind: FaultKind,
    status: int,
    content_type: str,
) -> None:
    """Each of these kinds answers its status, applies nothing, and the next call succeeds."""
    osvi_emulator.fault_plan.script(osvi_session_id, [kind])
    failed = await api.inject(osvi_session_id, {"context": "entry"})
    assert (failed.status, failed.content_type) == (status, content_type)
    assert osvi_emulator.applied(osvi_session_id) == ()
    assert _count(osvi_emulator, kind) == 1
    recovered = await api.inject(osvi_session_id, {"context": "entry"})
    assert recovered.status == 200
    assert osvi_emulator.applied(osvi_session_id) == ("entry",)


async def test_engine_error_body(
    api: Api, osvi_emulator: OsviEmulator, osvi_session_id: str
) -> None:
    """engine_error is the seed's 502 body with a null upstream_body."""
    osvi_emulator.fault_plan.script(osvi_session_id, ["engine_error"])
    reply = await api.inject(osvi_session_id, {"context": "entry"})
    assert reply.json == ENGINE_ERROR_BODY


async def test_engine_rejected_body(api: Api, osvi_emulator: OsviEmulator) -> None:
    """engine_rejected names the engine's 422 and the request, and carries the reason."""
    osvi_emulator.fault_plan = FaultPlan(engine_rejected=1.0, rejected_reason="bucket_locked")
    session_id = osvi_emulator.create_session()
    reply = await api.inject(session_id, {"context": "entry"})
    path = f"/v1/chat/session/{session_id}/inject_context"
    assert reply.json == {
        "success": False,
        "error": f"Python engine returned 422 for POST {path}",
        "upstream_body": {"state": "rejected", "reason": "bucket_locked"},
    }


async def test_rate_limited_sends_retry_after(api: Api, osvi_emulator: OsviEmulator) -> None:
    """rate_limited answers 429 with the configured Retry-After in seconds."""
    osvi_emulator.fault_plan = FaultPlan(rate_limited=1.0, retry_after_seconds=7)
    reply = await api.inject(osvi_emulator.create_session(), {"context": "entry"})
    assert (reply.status, reply.headers["Retry-After"]) == (429, "7")
    assert reply.json == {"success": False, "error": "rate_limited"}


async def test_ambiguous_502_applies_then_fails(
    api: Api, osvi_emulator: OsviEmulator, osvi_session_id: str
) -> None:
    """ambiguous_502 applies the entry, then answers a 502 saying the engine failed (a 500)."""
    osvi_emulator.fault_plan.script(osvi_session_id, [FaultKind.AMBIGUOUS_502])
    reply = await api.inject(osvi_session_id, {"context": "entry"})
    path = f"/v1/chat/session/{osvi_session_id}/inject_context"
    assert reply.status == 502
    assert reply.json == {
        "success": False,
        "error": f"Python engine returned 500 for POST {path}",
        "upstream_body": None,
    }
    assert osvi_emulator.applied(osvi_session_id) == ("entry",)
    assert _count(osvi_emulator, FaultKind.AMBIGUOUS_502) == 1


async def test_ambiguous_drop_applies_then_hangs_up(
    api: Api, osvi_emulator: OsviEmulator, osvi_session_id: str
) -> None:
    """ambiguous_drop applies the entry and closes the connection without an answer."""
    osvi_emulator.fault_plan.script(osvi_session_id, [FaultKind.AMBIGUOUS_DROP])
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.inject(osvi_session_id, {"context": "entry"})
    assert osvi_emulator.applied(osvi_session_id) == ("entry",)
    await eventually(lambda: osvi_emulator.stats.in_flight == 0)
    assert _count(osvi_emulator, FaultKind.AMBIGUOUS_DROP) == 1


async def test_hang_never_answers_until_the_client_gives_up(
    api: Api, osvi_emulator: OsviEmulator, osvi_session_id: str
) -> None:
    """hang holds the request open; when the client times out the server lets it go unapplied."""
    osvi_emulator.fault_plan.script(osvi_session_id, ["hang"])
    with pytest.raises(TimeoutError):
        await api.inject(osvi_session_id, {"context": "entry"}, timeout=0.2)
    await eventually(lambda: osvi_emulator.stats.in_flight == 0)
    assert osvi_emulator.applied(osvi_session_id) == ()
    assert osvi_emulator.requests_for(osvi_session_id) == 1
    assert _count(osvi_emulator, FaultKind.HANG) == 1


@pytest.mark.parametrize(
    "plan",
    [FaultPlan(hang=1.0), FaultPlan(latency=1.0, latency_seconds=5.0)],
    ids=["hang", "long latency"],
)
async def test_stop_releases_a_waiting_request(plan: FaultPlan) -> None:
    """Stopping the emulator drops a hanging or delayed request at once instead of waiting."""
    emulator = OsviEmulator(fault_plan=plan)
    await emulator.start()
    async with aiohttp.ClientSession(base_url=emulator.base_url) as http:
        api = Api(http, emulator.api_token)
        call = asyncio.create_task(api.inject(emulator.create_session(), {"context": "x"}))
        await eventually(lambda: emulator.stats.in_flight == 1)
        started = time.monotonic()
        await emulator.stop()
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await call
    assert time.monotonic() - started < 0.5


async def test_fixed_latency_delays_the_answer(
    api: Api, osvi_emulator: OsviEmulator, osvi_session_id: str
) -> None:
    """latency=1 with a fixed delay answers normally, no sooner than the delay."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=0.15)
    started = time.monotonic()
    reply = await api.inject(osvi_session_id, {"context": "entry"})
    assert reply.status == 200
    assert time.monotonic() - started >= 0.15
    assert _count(osvi_emulator, FaultKind.LATENCY) == 1
    assert osvi_emulator.applied(osvi_session_id) == ("entry",)


@given(
    seed=st.integers(),
    rates=st.lists(st.floats(0.0, 0.25), min_size=9, max_size=9),
    session_ids=st.lists(st.sampled_from(["a", "b", None]), max_size=30),
)
def test_any_seed_replays_the_same_decisions(
    seed: int, rates: list[float], session_ids: list[str | None]
) -> None:
    """For any seed, rates and call sequence, a second plan built alike decides identically."""
    kinds = [kind for kind in FaultKind if kind is not FaultKind.LATENCY]
    scale = 0.99 / sum(rates) if sum(rates) > 1 else 1.0
    config: dict[str, Any] = {kind: rate * scale for kind, rate in zip(kinds, rates, strict=True)}

    def run() -> list[FaultDecision]:
        plan = FaultPlan(seed=seed, latency=0.5, latency_seconds=(0.0, 2.0), **config)
        plan.script("a", ["hang", None])
        return [plan.decide(session_id) for session_id in session_ids]

    assert run() == run()


def test_random_latency_stays_within_its_range() -> None:
    """A (min, max) latency draws delays inside the range, and not all the same."""
    plan = FaultPlan(seed=3, latency=1.0, latency_seconds=(0.01, 0.05))
    delays = [plan.decide(None).delay_seconds for _ in range(50)]
    assert all(0.01 <= delay <= 0.05 for delay in delays)
    assert len(set(delays)) > 1


# --- Rates, seeds and plan rules ------------------------------------------------------------


def test_same_seed_same_decisions() -> None:
    """Two plans with the same seed and rates decide the same sequence; another seed differs."""
    rates: dict[str, Any] = {"engine_error": 0.2, "rate_limited": 0.2, "hang": 0.1, "latency": 0.3}

    def decisions(seed: int) -> list[FaultDecision]:
        plan = FaultPlan(seed=seed, latency_seconds=(0.0, 1.0), **rates)
        return [plan.decide("s") for _ in range(200)]

    first, again, other = decisions(42), decisions(42), decisions(43)
    assert first == again
    assert first != other
    kinds = {decision.kind for decision in first}
    assert kinds == {None, FaultKind.ENGINE_ERROR, FaultKind.RATE_LIMITED, FaultKind.HANG}


async def test_same_seed_same_answers_over_http() -> None:
    """Two emulators with the same seeded plan answer the same status sequence."""

    async def statuses(seed: int) -> list[int]:
        plan = FaultPlan(seed=seed, engine_error=0.3, unavailable=0.2, rate_limited=0.1)
        async with (
            OsviEmulator(fault_plan=plan) as emulator,
            aiohttp.ClientSession(base_url=emulator.base_url) as http,
        ):
            api = Api(http, emulator.api_token)
            session_id = emulator.create_session()
            return [(await api.inject(session_id, {"context": "x"})).status for _ in range(30)]

    first, again = await statuses(7), await statuses(7)
    assert first == again
    assert set(first) == {200, 429, 502, 503}


def test_rates_are_validated() -> None:
    """A rate outside [0, 1], rates summing above 1 or a bad latency range are refused."""
    with pytest.raises(ValueError, match="engine_error"):
        FaultPlan(engine_error=1.5)
    with pytest.raises(ValueError, match="sum to at most 1"):
        FaultPlan(engine_error=0.6, unavailable=0.5)
    with pytest.raises(ValueError, match="latency_seconds"):
        FaultPlan(latency_seconds=(0.2, 0.1))
    assert FaultPlan(engine_error=0.1, unavailable=0.2, hang=0.7).rate_of("hang") == 0.7


async def test_a_full_rate_fails_every_call(api: Api, osvi_emulator: OsviEmulator) -> None:
    """engine_error=1 fails every inject_context call and applies nothing."""
    osvi_emulator.fault_plan = FaultPlan(engine_error=1.0)
    session_id = osvi_emulator.create_session()
    statuses = [(await api.inject(session_id, {"context": "x"})).status for _ in range(5)]
    assert statuses == [502] * 5
    assert osvi_emulator.applied(session_id) == ()
    assert _count(osvi_emulator, FaultKind.ENGINE_ERROR) == 5


async def test_plan_covers_inject_context_unless_told_otherwise(
    api: Api, osvi_emulator: OsviEmulator
) -> None:
    """By default other endpoints are spared; all_endpoints=True fails them too."""
    osvi_emulator.fault_plan = FaultPlan(engine_error=1.0)
    spared = await api.create({"agent_uuid": "a", "customer_id": "c"})
    osvi_emulator.fault_plan = FaultPlan(engine_error=1.0, all_endpoints=True)
    failed = await api.create({"agent_uuid": "a", "customer_id": "c2"})
    lookup = await api.active({"customer_id": "c"})
    assert (spared.status, failed.status, lookup.status) == (200, 502, 502)
    assert lookup.json == ENGINE_ERROR_BODY


async def test_ambiguous_drop_on_create_session_still_creates(
    api: Api, osvi_emulator: OsviEmulator
) -> None:
    """With all_endpoints, ambiguous_drop opens the session and then hangs up."""
    osvi_emulator.fault_plan = FaultPlan(ambiguous_drop=1.0, all_endpoints=True)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.create({"agent_uuid": "agent_A", "customer_id": "cust"})
    osvi_emulator.fault_plan = FaultPlan()
    found = await api.active({"customer_id": "cust", "agent_uuid": "agent_A"})
    assert found.status == 200


async def test_where_each_fault_strikes(api: Api, osvi_emulator: OsviEmulator) -> None:
    """Proxy faults come before auth, rate limits after it, engine faults after validation."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.fault_plan = FaultPlan(unavailable=1.0)
    proxy = await api.inject(session_id, {"context": "x"}, token=None)
    osvi_emulator.fault_plan = FaultPlan(rate_limited=1.0)
    limited = await api.inject(session_id, {"context": "x"}, token=None)
    osvi_emulator.fault_plan = FaultPlan(engine_error=1.0)
    invalid = await api.inject(session_id, {"context": ""})
    osvi_emulator.close_session(session_id)
    closed = await api.inject(session_id, {"context": "x"})
    assert [proxy.status, limited.status, invalid.status, closed.status] == [503, 401, 400, 404]
    # Only the faults that were actually applied are counted.
    assert dict(osvi_emulator.stats.faults_injected)[FaultKind.UNAVAILABLE] == 1
    assert _count(osvi_emulator, FaultKind.RATE_LIMITED) == 0
    assert _count(osvi_emulator, FaultKind.ENGINE_ERROR) == 0


# --- Scripts and outages --------------------------------------------------------------------


async def test_script_fails_the_next_calls_in_order(
    api: Api, osvi_emulator: OsviEmulator, osvi_session_id: str
) -> None:
    """A script applies its faults to the next calls of that session only, then stops."""
    other = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(osvi_session_id, ["engine_error", None, "unavailable"])
    statuses = [(await api.inject(osvi_session_id, {"context": f"{n}"})).status for n in range(4)]
    assert statuses == [502, 200, 503, 200]
    assert (await api.inject(other, {"context": "x"})).status == 200
    assert osvi_emulator.applied(osvi_session_id) == ("1", "3")


async def test_scripted_latency_and_clear(
    api: Api, osvi_emulator: OsviEmulator, osvi_session_id: str
) -> None:
    """A scripted latency delays one call; clear() drops what is still queued."""
    osvi_emulator.fault_plan = FaultPlan(latency_seconds=0.1)
    osvi_emulator.fault_plan.script(osvi_session_id, ["latency", "engine_error"])
    started = time.monotonic()
    delayed = await api.inject(osvi_session_id, {"context": "x"})
    assert (delayed.status, time.monotonic() - started >= 0.1) == (200, True)
    osvi_emulator.fault_plan.clear()
    assert (await api.inject(osvi_session_id, {"context": "y"})).status == 200


def test_manual_clock_only_moves_forward() -> None:
    """ManualClock advances when told and refuses to go back."""
    clock = ManualClock(5.0)
    clock.advance(2.5)
    assert clock() == 7.5
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1)


def test_script_rejects_unknown_kinds() -> None:
    """A misspelled kind fails when scripted, not later on the wire."""
    with pytest.raises(ValueError, match="engine_eror"):
        FaultPlan().script("s", ["engine_eror"])


async def test_outage_window_follows_the_injected_clock(
    api: Api, osvi_emulator: OsviEmulator, osvi_session_id: str
) -> None:
    """An outage fails every call until its end on the plan's clock, then calls recover."""
    clock = ManualClock()
    osvi_emulator.fault_plan = FaultPlan(clock=clock)
    osvi_emulator.fault_plan.outage(10.0, kind="gateway_timeout")
    first = await api.inject(osvi_session_id, {"context": "a"})
    clock.advance(9.9)
    still = await api.inject(osvi_session_id, {"context": "b"})
    clock.advance(0.2)
    after = await api.inject(osvi_session_id, {"context": "c"})
    assert [first.status, still.status, after.status] == [504, 504, 200]
    assert osvi_emulator.applied(osvi_session_id) == ("c",)
    assert _count(osvi_emulator, FaultKind.GATEWAY_TIMEOUT) == 2


def test_script_wins_over_outage() -> None:
    """During an outage a scripted session still takes its script first."""
    plan = FaultPlan(clock=ManualClock())
    plan.outage(5.0)
    plan.script("s", [None])
    assert [plan.decide("s").kind, plan.decide("s").kind] == [None, FaultKind.ENGINE_ERROR]


# --- Counters -------------------------------------------------------------------------------


async def test_connections_are_counted_as_the_server_sees_them(osvi_emulator: OsviEmulator) -> None:
    """100 concurrent calls through a 20-connection pool open exactly 20 connections."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=0.05)
    session_ids = [osvi_emulator.create_session() for _ in range(100)]
    connector = aiohttp.TCPConnector(limit=20)
    async with aiohttp.ClientSession(base_url=osvi_emulator.base_url, connector=connector) as http:
        api = Api(http, osvi_emulator.api_token)
        replies = await asyncio.gather(*(api.inject(sid, {"context": "x"}) for sid in session_ids))
        during = osvi_emulator.stats
    assert {reply.status for reply in replies} == {200}
    assert during.requests_total == 100
    assert during.connections_opened == 20
    assert during.peak_open_connections == 20
    assert during.peak_in_flight == 20
    assert during.open_connections == 20
    await eventually(lambda: osvi_emulator.stats.open_connections == 0)
    assert osvi_emulator.stats.in_flight == 0


async def test_keep_alive_reuses_one_connection(api: Api, osvi_emulator: OsviEmulator) -> None:
    """Sequential calls on a keep-alive session use one connection; reset_stats zeroes totals."""
    session_id = osvi_emulator.create_session()
    for _ in range(5):
        await api.inject(session_id, {"context": "x"})
    stats = osvi_emulator.stats
    assert stats.connections_opened == stats.peak_open_connections == stats.peak_in_flight == 1
    osvi_emulator.reset_stats()
    reset = osvi_emulator.stats
    assert (reset.requests_total, reset.connections_opened) == (0, 0)
    assert (reset.open_connections, reset.peak_open_connections) == (1, 1)
    assert set(reset.faults_injected.values()) == {0}


async def test_closed_connections_are_counted_closed(osvi_emulator: OsviEmulator) -> None:
    """With force_close every call opens and closes its own connection."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(base_url=osvi_emulator.base_url, connector=connector) as http:
        api = Api(http, osvi_emulator.api_token)
        session_id = osvi_emulator.create_session()
        for _ in range(3):
            await api.inject(session_id, {"context": "x"})
    assert osvi_emulator.stats.connections_opened == 3
    await eventually(lambda: osvi_emulator.stats.open_connections == 0)
