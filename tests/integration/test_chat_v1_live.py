"""The Chat v1 client against the emulator on a real socket: a whole conversation, the retry
class of every endpoint under a fault that applied the request, and addressing by customer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import ClientSession, web

from osvi_async import (
    APIConnectionError,
    APIStatusError,
    CustomerInjectRequest,
    EngineError,
    EngineRejectedError,
    NotFoundError,
    OsviClient,
    RetryPolicy,
)
from osvi_async.testing import FaultPlan, OsviEmulator

AGENT = "agent_IsZ3Q6Sf_60Eh26XQMGbz-R_og"
OSVI = web.AppKey("osvi", OsviClient)
FAST_NO_RETRY = RetryPolicy.none()
CUSTOMER = "+15551112222"


async def test_a_whole_conversation(live_client: OsviClient, osvi_emulator: OsviEmulator) -> None:
    """Open, look up, talk, take over, hand back, whisper, close: each answer decoded."""
    client = live_client
    session = await client.create_session(
        AGENT, CUSTOMER, input_fields={"first_name": "Alex"}, context=["Prefers WhatsApp"]
    )
    assert session.status == "active"
    assert session.mode == "ai"
    assert session.metadata.context == ("Prefers WhatsApp",)
    assert session.metadata.input_fields == {"first_name": "Alex"}
    assert session.created_at is not None
    assert session.created_at.tzinfo is not None
    assert (await client.get_active_session(CUSTOMER, AGENT)).id == session.id
    assert list(await client.get_active_sessions(CUSTOMER)) == [AGENT]

    reply = await client.send_message(AGENT, CUSTOMER, "Hi, I need a refund")
    assert reply.session_id == session.id
    assert reply.reply == "Emulated agent reply to: Hi, I need a refund"
    assert reply.help_requested is False
    assert (await client.send_message(AGENT, CUSTOMER, "Can I talk to a human?")).help_requested

    taken = await client.support(session.id, "takeover")
    assert taken.command == "takeover"
    assert taken.active_human
    assert (await client.send_message(AGENT, CUSTOMER, "Hello?")).reply == ""
    assert (await client.support(session.id, None, "Hi, this is Sam")).command is None
    with pytest.raises(EngineRejectedError) as refused:
        await client.support(session.id, "tell", "Offer a callback")
    assert refused.value.upstream_body is not None
    assert refused.value.upstream_body["reason"] == "tell_not_allowed_during_takeover"

    await client.support(session.id, "end")
    told = await client.support(session.id, "tell", "Offer a callback")
    assert told.reply == "Emulated agent reply to: Offer a callback"
    await client.support(session.id, "whisper", "VIP customer")
    await client.close_session(session.id)
    with pytest.raises(NotFoundError):
        await client.get_active_session(CUSTOMER, AGENT)
    assert dict(await client.get_active_sessions(CUSTOMER)) == {}
    roles = [role for role, _ in osvi_emulator.messages(session.id)]
    assert roles.count("customer") == 3
    assert ("operator", "Hi, this is Sam") in osvi_emulator.messages(session.id)
    assert ("whisper", "VIP customer") in osvi_emulator.messages(session.id)


async def test_plain_operator_message_outside_support_mode_is_refused(
    live_client: OsviClient,
) -> None:
    """The engine refuses it; the refusal is never retried and certainly not applied."""
    session = await live_client.create_session(AGENT, CUSTOMER)
    with pytest.raises(EngineRejectedError) as caught:
        await live_client.support(session.id, None, "Hello from an operator")
    assert caught.value.may_have_been_applied is False


# The retry class of each endpoint on a real server: set up, arm one fault that applies the
# request and then fails, call, and count the requests the endpoint saw.
Setup = Any  # async (client, emulator) -> session id or None
Action = Any  # async (client, session id or None) -> result


async def no_setup(client: OsviClient, emulator: OsviEmulator) -> str | None:
    """Nothing to prepare."""
    return None


async def a_session(client: OsviClient, emulator: OsviEmulator) -> str | None:
    """An active session for CUSTOMER with AGENT."""
    return emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)


async def a_taken_over_session(client: OsviClient, emulator: OsviEmulator) -> str | None:
    """A session an operator holds (support mode)."""
    session_id = emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
    await client.support(session_id, "takeover")
    return session_id


def support(command: str | None, message: str | None = None) -> Action:
    """The support call under test."""

    async def act(client: OsviClient, session_id: str | None) -> Any:
        assert session_id is not None
        return await client.support(session_id, command, message)

    return act


RETRY_CLASSES: list[tuple[str, str, int, Setup, Action]] = [
    ("create", "create_session", 1, no_setup, lambda c, _: c.create_session(AGENT, CUSTOMER)),
    ("send_message", "inbound", 1, no_setup, lambda c, _: c.send_message(AGENT, CUSTOMER, "Hi")),
    ("lookup", "active_session", 2, a_session, lambda c, _: c.get_active_session(CUSTOMER, AGENT)),
    ("tell", "support", 1, a_session, support("tell", "Offer a callback")),
    ("plain", "support", 1, a_taken_over_session, support(None, "Hi, this is Sam")),
    ("takeover+message", "support", 1, a_session, support("takeover", "A human is joining")),
    ("takeover", "support", 2, a_session, support("takeover")),
    ("end", "support", 2, a_taken_over_session, support("end")),
    ("whisper", "support", 2, a_session, support("whisper", "VIP")),
    ("inject", "inject_context", 2, a_session, lambda c, s: c.inject_context(s, "Voice call")),
]


@pytest.mark.parametrize("fault", ["ambiguous_502", "ambiguous_drop"])
@pytest.mark.parametrize(
    ("endpoint", "requests", "setup", "action"),
    [case[1:] for case in RETRY_CLASSES],
    ids=[case[0] for case in RETRY_CLASSES],
)
async def test_retry_class_on_a_real_server(
    live_client: OsviClient,
    osvi_emulator: OsviEmulator,
    fault: str,
    endpoint: str,
    requests: int,
    setup: Setup,
    action: Action,
) -> None:
    """At most once: one request, raised as maybe applied; the others: retried, succeed."""
    session_id = await setup(live_client, osvi_emulator)
    plan = FaultPlan()
    plan.script_endpoint(endpoint, [fault])
    osvi_emulator.fault_plan = plan
    before = osvi_emulator.requests(endpoint)
    if requests == 1:
        with pytest.raises((EngineError, APIConnectionError)) as caught:
            await action(live_client, session_id)
        assert caught.value.may_have_been_applied is True
    else:
        await action(live_client, session_id)
    assert osvi_emulator.requests(endpoint) - before == requests


async def test_create_that_applied_then_failed_left_one_session_to_find(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """The recovery the error suggests works: the session it may have opened is found."""
    plan = FaultPlan()
    plan.script_endpoint("create_session", ["ambiguous_drop"])
    osvi_emulator.fault_plan = plan
    with pytest.raises(APIConnectionError) as caught:
        await live_client.create_session(AGENT, CUSTOMER)
    assert "get_active_session" in str(caught.value)
    found = await live_client.get_active_session(CUSTOMER, AGENT)
    assert found.status == "active"
    assert osvi_emulator.requests("create_session") == 1


async def test_whisper_retried_is_flagged_and_was_applied_twice(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """The at-least-once whisper lands twice after an applied-then-failed attempt; flagged."""
    session_id = osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
    plan = FaultPlan()
    plan.script_endpoint("support", ["ambiguous_502"])
    osvi_emulator.fault_plan = plan
    result = await live_client.support(session_id, "whisper", "VIP customer")
    assert result.possible_duplicate is True
    assert osvi_emulator.messages(session_id).count(("whisper", "VIP customer")) == 2


async def test_inject_for_customer_follows_a_new_session(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """After the cached session closes and a new one opens, the entry lands in the new one."""
    first = osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
    await live_client.inject_context_for_customer(CUSTOMER, AGENT, "one")
    second = osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
    result = await live_client.inject_context_for_customer(CUSTOMER, AGENT, "two")
    assert result.session_id == second
    assert osvi_emulator.applied(first) == ("one",)
    assert osvi_emulator.applied(second) == ("two",)
    assert osvi_emulator.requests("active_session") == 2


async def test_bulk_by_customer_keeps_each_customers_order(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """Interleaved customers, 8 in flight: each session gets its entries in input order,
    with one lookup per customer."""
    customers = [f"customer-{n}" for n in range(4)]
    sessions = {c: osvi_emulator.create_session(agent_uuid=AGENT, customer_id=c) for c in customers}
    items = [
        CustomerInjectRequest(customer, AGENT, f"{customer} entry {n}")
        for n in range(12)
        for customer in customers
    ]
    async with live_client.inject_many(items, concurrency=8) as run:
        outcomes = [outcome async for outcome in run]
    assert all(outcome.ok for outcome in outcomes)
    assert {type(outcome.request) for outcome in outcomes} == {CustomerInjectRequest}
    for customer in customers:
        assert osvi_emulator.applied(sessions[customer]) == tuple(
            f"{customer} entry {n}" for n in range(12)
        )
    assert osvi_emulator.requests("active_session") == len(customers)


async def test_bulk_item_for_a_customer_without_session_fails_alone(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """No active session is a 404 for that item (refused for good); the others land."""
    session_id = osvi_emulator.create_session(agent_uuid=AGENT, customer_id="known")
    items = [
        CustomerInjectRequest("unknown", AGENT, "lost"),
        CustomerInjectRequest("known", AGENT, "kept"),
        CustomerInjectRequest("unknown", AGENT, "also lost"),
        CustomerInjectRequest(" ", AGENT, "invalid"),
    ]
    async with live_client.inject_many(items) as run:
        outcomes = sorted([o async for o in run], key=lambda o: o.index)
    assert [o.ok for o in outcomes] == [False, True, False, False]
    assert isinstance(outcomes[0].error, NotFoundError)
    assert isinstance(outcomes[2].error, NotFoundError)  # not held: a 404 is final
    assert run.summary.invalid == 1
    assert osvi_emulator.applied(session_id) == ("kept",)


async def test_a_web_handler_injects_for_a_customer_in_one_call(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """The shape of a FastAPI/aiohttp route: one awaited call per event, on a shared client."""
    session_id = osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)

    async def call_ended(request: web.Request) -> web.Response:
        event = await request.json()
        result = await request.app[OSVI].inject_context_for_customer(
            event["customer_id"], event["agent_uuid"], event["summary"]
        )
        return web.json_response({"session_id": result.session_id})

    app = web.Application()
    app[OSVI] = live_client
    app.router.add_post("/calls/ended", call_ended)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with ClientSession() as http:
            events = [
                {"customer_id": CUSTOMER, "agent_uuid": AGENT, "summary": f"call {n}"}
                for n in range(5)
            ]
            answers = await asyncio.gather(
                *(
                    http.post(f"http://127.0.0.1:{site.port}/calls/ended", json=event)
                    for event in events
                )
            )
            bodies = [await answer.json() for answer in answers]
    finally:
        await runner.cleanup()
    assert {body["session_id"] for body in bodies} == {session_id}
    assert sorted(osvi_emulator.applied(session_id)) == [f"call {n}" for n in range(5)]
    assert osvi_emulator.requests("active_session") == 1


ERROR_SHAPES = [
    (422, {"success": False, "errors": ["agent_uuid is required"]}, "BadRequestError"),
    (404, {"success": False, "error": "session_not_found"}, "NotFoundError"),
    (401, {"success": False, "error": "unauthorized"}, "AuthenticationError"),
    (502, {"success": False, "error": "engine unreachable", "upstream_body": None}, "EngineError"),
    (
        502,
        {"success": False, "error": "Python engine returned 422 for POST /x",
         "upstream_body": {"state": "rejected", "reason": "agent_disabled"}},
        "EngineRejectedError",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "error_name"), ERROR_SHAPES)
async def test_every_endpoint_maps_every_error_shape_on_a_real_socket(
    status: int, body: dict[str, Any], error_name: str
) -> None:
    """A server answering every route with one error shape: each call raises its class,
    with `errors`, `code` and `upstream_body` read from the body."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    session_id = "4718a326-417b-4dda-90d0-21fd65a11cb8"
    calls = [
        lambda c: c.create_session(AGENT, CUSTOMER),
        lambda c: c.get_active_session(CUSTOMER, AGENT),
        lambda c: c.send_message(AGENT, CUSTOMER, "Hi"),
        lambda c: c.support(session_id, "end"),
        lambda c: c.inject_context(session_id, "note"),
    ]
    try:
        async with OsviClient(
            "0123456789abcdef", base_url=f"http://127.0.0.1:{site.port}", retry=FAST_NO_RETRY
        ) as client:
            for make_call in calls:
                with pytest.raises(APIStatusError) as caught:
                    await make_call(client)
                error = caught.value
                assert type(error).__name__ == error_name
                assert error.status == status
                assert error.errors == tuple(body.get("errors", ()))
                if "upstream_body" in body:
                    assert isinstance(error, EngineError)
                    assert error.upstream_body == body["upstream_body"]
    finally:
        await runner.cleanup()
    assert len(seen) == len(calls)
