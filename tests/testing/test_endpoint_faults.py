"""Fault plans on every endpoint: coverage by name, endpoint scripts, ambiguous faults, counts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from osvi_async.testing import ENDPOINT_NAMES, FaultKind, FaultPlan, OsviEmulator
from tests.testing.helpers import AGENT, Api, Reply

PAIR = {"agent_uuid": AGENT, "customer_id": "cust"}
MESSAGE = {**PAIR, "content": "Hi"}

Call = Callable[[Api, str], Awaitable[Reply]]
"""Sends one valid request to an endpoint, given an open session of ("cust", AGENT)."""

CALLS: dict[str, Call] = {
    "create_session": lambda api, session_id: api.create(PAIR),
    "active_session": lambda api, session_id: api.active(PAIR),
    "inbound": lambda api, session_id: api.inbound(MESSAGE),
    "support": lambda api, session_id: api.support(session_id, {"command": "takeover"}),
    "inject_context": lambda api, session_id: api.inject(session_id, {"context": "x"}),
}


def test_endpoint_names_are_the_five_endpoints() -> None:
    """ENDPOINT_NAMES lists every endpoint the emulator serves, each once."""
    assert sorted(ENDPOINT_NAMES) == sorted(CALLS)


def test_which_endpoints_a_plan_covers() -> None:
    """Default inject_context only; endpoints= names them (one name or many); all covers all."""
    assert FaultPlan().covered_endpoints == {"inject_context"}
    assert FaultPlan(endpoints="inbound").covered_endpoints == {"inbound"}
    assert FaultPlan(endpoints=["inbound", "support"]).covered_endpoints == {"inbound", "support"}
    assert FaultPlan(endpoints=()).covered_endpoints == frozenset()
    assert FaultPlan(all_endpoints=True).covered_endpoints == set(ENDPOINT_NAMES)


def test_endpoint_names_are_checked() -> None:
    """Unknown names and endpoints combined with all_endpoints are refused when built."""
    with pytest.raises(ValueError, match="unknown endpoint 'inbox'"):
        FaultPlan(endpoints={"inbox"})
    with pytest.raises(ValueError, match="not both"):
        FaultPlan(endpoints={"inbound"}, all_endpoints=True)
    with pytest.raises(ValueError, match="unknown endpoint 'session'"):
        FaultPlan().script_endpoint("session", ["engine_error"])
    with pytest.raises(ValueError, match="not_a_fault"):
        FaultPlan().script_endpoint("inbound", ["not_a_fault"])


@pytest.mark.parametrize("endpoint", list(CALLS))
async def test_a_plan_fails_only_the_endpoints_it_names(
    api: Api, osvi_emulator: OsviEmulator, endpoint: str
) -> None:
    """With endpoints={name}, that endpoint fails and every other one answers normally."""
    osvi_emulator.fault_plan = FaultPlan(endpoints={endpoint}, engine_error=1.0)
    statuses = {}
    for name, call in CALLS.items():
        session_id = osvi_emulator.create_session(**PAIR)
        statuses[name] = (await call(api, session_id)).status
    assert statuses == {name: 502 if name == endpoint else 200 for name in CALLS}


async def test_failures_that_apply_nothing_leave_no_trace(
    api: Api, osvi_emulator: OsviEmulator
) -> None:
    """An engine_error on create or inbound opens no session and records no message."""
    osvi_emulator.fault_plan = FaultPlan(endpoints={"create_session", "inbound"}, engine_error=1.0)
    created = await api.create(PAIR)
    sent = await api.inbound(MESSAGE)
    osvi_emulator.fault_plan = FaultPlan()
    lookup = await api.active({"customer_id": "cust"})
    assert (created.status, sent.status, lookup.json["data"]) == (502, 502, {})


@pytest.mark.parametrize("endpoint", ["create_session", "active_session", "inbound"])
async def test_endpoint_scripts_fault_endpoints_without_a_session_in_the_path(
    api: Api, osvi_emulator: OsviEmulator, endpoint: str
) -> None:
    """script_endpoint forces the next answers of one endpoint, in order, even if not covered."""
    session_id = osvi_emulator.create_session(**PAIR)
    osvi_emulator.fault_plan.script_endpoint(endpoint, ["unavailable", None, "rate_limited"])
    call = CALLS[endpoint]
    statuses = [(await call(api, session_id)).status for _ in range(4)]
    other_session = osvi_emulator.create_session(customer_id="someone_else")
    untouched = await CALLS["inject_context"](api, other_session)
    assert statuses == [503, 200, 429, 200]
    assert untouched.status == 200


async def test_a_sessions_script_comes_before_its_endpoints_script(
    api: Api, osvi_emulator: OsviEmulator
) -> None:
    """With both queued, a support request takes the session's entry first, then the endpoint's."""
    session_id = osvi_emulator.create_session(**PAIR)
    plan = FaultPlan(endpoints={"support"})
    plan.script(session_id, ["engine_error"])
    plan.script_endpoint("support", ["unavailable"])
    osvi_emulator.fault_plan = plan
    first = await api.support(session_id, {"command": "end"})
    second = await api.support(session_id, {"command": "end"})
    third = await api.support(session_id, {"command": "end"})
    assert [first.status, second.status, third.status] == [502, 503, 200]


async def test_clear_drops_endpoint_scripts(api: Api, osvi_emulator: OsviEmulator) -> None:
    """clear() forgets queued endpoint scripts too."""
    osvi_emulator.fault_plan.script_endpoint("create_session", ["engine_error"])
    osvi_emulator.fault_plan.clear()
    assert (await api.create(PAIR)).status == 200


def test_uncovered_requests_draw_no_randomness() -> None:
    """Requests a plan does not cover leave the seeded sequence of covered decisions unchanged."""
    alone = FaultPlan(seed=3, engine_error=0.5)
    mixed = FaultPlan(seed=3, engine_error=0.5)
    expected = [alone.decide("s", "inject_context") for _ in range(20)]
    seen = []
    for _ in range(20):
        assert mixed.decide(None, "inbound") == mixed.decide(None, "create_session")
        seen.append(mixed.decide("s", "inject_context"))
    assert seen == expected
    assert {decision.kind for decision in expected} == {None, FaultKind.ENGINE_ERROR}


_REPLY = "Emulated agent reply to: Hi"


@pytest.mark.parametrize("kind", ["ambiguous_502", "ambiguous_drop"])
@pytest.mark.parametrize("endpoint", list(CALLS))
async def test_ambiguous_faults_apply_the_change_then_fail(
    api: Api, osvi_emulator: OsviEmulator, endpoint: str, kind: str
) -> None:
    """On every endpoint the change is made (session, message, command, entry), then it fails."""
    session_id = osvi_emulator.create_session(**PAIR)
    # aiohttp itself resends an idempotent GET once when the server hangs up on it.
    attempts = 2 if (endpoint, kind) == ("active_session", "ambiguous_drop") else 1
    osvi_emulator.fault_plan.script_endpoint(endpoint, [kind] * attempts)
    if kind == "ambiguous_drop":
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await CALLS[endpoint](api, session_id)
    else:
        reply = await CALLS[endpoint](api, session_id)
        assert (reply.status, reply.json["upstream_body"]) == (502, None)
        assert reply.json["error"].startswith("Python engine returned 500 for ")
    record = await api.active(PAIR)
    assert record.status == 200
    data = record.json["data"]
    # What each endpoint's request changed, read back after the failure.
    changed = {
        "create_session": data["id"] != session_id,
        "active_session": data["id"] == session_id,
        "inbound": osvi_emulator.messages(session_id) == [("customer", "Hi"), ("agent", _REPLY)],
        "support": (data["mode"], data["active_human"]) == ("support", "operator@emulator.invalid"),
        "inject_context": osvi_emulator.applied(session_id) == ("x",),
    }
    assert changed[endpoint]
    assert osvi_emulator.stats.faults_injected[FaultKind(kind)] == attempts
    assert osvi_emulator.requests(endpoint) == attempts + (endpoint == "active_session")


async def test_requests_counts_every_request_per_endpoint(
    api: Api, osvi_emulator: OsviEmulator
) -> None:
    """requests(endpoint) counts answered, refused and faulted requests, not unrouted ones."""
    session_id = osvi_emulator.create_session(**PAIR)
    osvi_emulator.fault_plan.script_endpoint("inbound", ["engine_error"])
    await api.inbound(MESSAGE)  # faulted
    await api.inbound(MESSAGE)  # answered
    await api.inbound({})  # 422
    await api.inbound(MESSAGE, token=None)  # 401
    await api.support(session_id, {"command": "end"})
    await api.request("GET", "/v1/chat/inbound")  # 405: not routed to the endpoint
    await api.request("POST", "/v1/chat/nowhere")  # 404: no endpoint
    osvi_emulator.reset_stats()
    counts = {name: osvi_emulator.requests(name) for name in ENDPOINT_NAMES}
    assert counts == {
        "create_session": 0,
        "active_session": 0,
        "inbound": 4,
        "support": 1,
        "inject_context": 0,
    }
    with pytest.raises(ValueError, match="unknown endpoint 'session'"):
        osvi_emulator.requests("session")
