"""The Chat v1 endpoints on aioresponses: what is sent, what is decoded, what is retried.

The retry-class tests count the requests the "server" saw for a failure after which the
request may have been applied: 1 for an at-most-once endpoint, more for the others.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from aioresponses import aioresponses
from yarl import URL

from osvi_async import (
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    ChatSession,
    ClientValidationError,
    EngineError,
    EngineRejectedError,
    NotFoundError,
    OsviClient,
    ResponseDecodeError,
    RetryPolicy,
    ServerError,
)
from tests.support import BASE_URL, SESSION_ID, TOKEN, FakeSleep

AGENT = "agent_IsZ3Q6Sf_60Eh26XQMGbz-R_og"
CUSTOMER = "+15551112222"
OTHER_SESSION = "9c1b2d3e-4f50-4a6b-8c7d-0e1f2a3b4c5d"
CREATE_URL = f"{BASE_URL}/v1/chat/session"
ACTIVE_URL = f"{BASE_URL}/v1/chat/session/active?customer_id=%2B15551112222&agent_uuid={AGENT}"
ALL_ACTIVE_URL = f"{BASE_URL}/v1/chat/session/active?customer_id=%2B15551112222"
INBOUND_URL = f"{BASE_URL}/v1/chat/inbound"
SUPPORT_URL = f"{BASE_URL}/v1/chat/session/{SESSION_ID}/support"

# A 502 in which the engine answered with a failure: it may have applied the request.
MAYBE_APPLIED = {
    "status": 502,
    "payload": {"success": False, "error": "Python engine returned 500 for POST /x"},
}
# A 502 saying nothing reached the engine: certainly not applied.
NOT_APPLIED = {
    "status": 502,
    "payload": {"success": False, "error": "Python engine unreachable", "upstream_body": None},
}


DEEP: dict[str, Any] = {}
_level = DEEP
for _ in range(5000):
    _level["x"] = _level = {}
REFUSED_KEY = ConnectionKey("api.osvi.ai", 443, True, True, None, None, None)


def session_json(session_id: str = SESSION_ID, **changes: Any) -> dict[str, Any]:
    """A session record as the docs show it."""
    record: dict[str, Any] = {
        "id": session_id,
        "chat_agent_id": 42,
        "account_id": 7,
        "customer_id": CUSTOMER,
        "mode": "ai",
        "help_requested": False,
        "status": "active",
        "current_state": None,
        "metadata": {
            "input_fields": {"first_name": "Alex"},
            "state_fields": {},
            "context": ["Initial context for this chat"],
        },
        "active_human": None,
        "created_at": "2026-11-30T10:00:00Z",
        "updated_at": "2026-11-30T10:05:00+01:00",
    }
    record.update(changes)
    return record


def ok(data: object) -> dict[str, Any]:
    """The success envelope."""
    return {"success": True, "data": data}


def inject_ok(session_id: str = SESSION_ID) -> dict[str, Any]:
    """An inject_context success for `session_id`."""
    return ok({"session_id": session_id, "context": ["Voice call: refund"]})


def sent(mocked: aioresponses, method: str, url: str) -> list[Any]:
    """The requests made to `url` (aioresponses sorts the query, so compare it as a set)."""
    wanted = URL(url, encoded=True)
    return [
        request
        for (seen_method, seen), requests in mocked.requests.items()
        if seen_method == method
        and seen.path == wanted.path
        and sorted(seen.query.items()) == sorted(wanted.query.items())
        for request in requests
    ]


# -- create_session ----------------------------------------------------------------------


async def test_create_session_sends_the_body_and_decodes_the_session(
    client: OsviClient, mocked: aioresponses
) -> None:
    """Every documented field is decoded: tuples, read-only mappings, aware datetimes."""
    mocked.post(CREATE_URL, payload=ok(session_json()))
    session = await client.create_session(
        AGENT, CUSTOMER, input_fields={"first_name": "Alex"}, context=["Initial context"]
    )
    [request] = sent(mocked, "POST", CREATE_URL)
    assert request.kwargs["data"] == (
        b'{"agent_uuid":"agent_IsZ3Q6Sf_60Eh26XQMGbz-R_og","customer_id":"+15551112222",'
        b'"input_fields":{"first_name":"Alex"},"context":["Initial context"]}'
    )
    assert session.id == SESSION_ID
    assert session.chat_agent_id == 42
    assert session.mode == "ai"
    assert session.status == "active"
    assert session.metadata.context == ("Initial context for this chat",)
    assert session.metadata.input_fields == {"first_name": "Alex"}
    with pytest.raises(TypeError):
        session.metadata.input_fields["x"] = 1  # type: ignore[index]
    assert session.created_at == datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    assert session.updated_at is not None
    assert session.updated_at.utcoffset() is not None
    assert hash(session) == hash(session)  # frozen and hashable despite the mappings


async def test_create_session_is_not_retried_after_a_maybe_applied_failure(
    client: OsviClient, mocked: aioresponses
) -> None:
    """One request only; the error says it may have been applied and how to check."""
    mocked.post(CREATE_URL, **MAYBE_APPLIED)
    mocked.post(CREATE_URL, payload=ok(session_json()))
    with pytest.raises(EngineError) as caught:
        await client.create_session(AGENT, CUSTOMER)
    assert len(sent(mocked, "POST", CREATE_URL)) == 1
    assert caught.value.may_have_been_applied is True
    assert "get_active_session(customer_id, agent_uuid)" in str(caught.value)
    assert "customer '+15551112222' with agent" in str(caught.value)


async def test_create_session_is_not_retried_after_a_timeout(mocked: aioresponses) -> None:
    """A timed-out create may have opened the session: raised at once, maybe applied."""
    mocked.post(CREATE_URL, exception=TimeoutError())
    mocked.post(CREATE_URL, payload=ok(session_json()))
    async with OsviClient(TOKEN, base_url=BASE_URL) as client:
        with pytest.raises(APITimeoutError) as caught:
            await client.create_session(AGENT, CUSTOMER)
    assert len(sent(mocked, "POST", CREATE_URL)) == 1
    assert caught.value.may_have_been_applied is True


@pytest.mark.parametrize(
    "failure",
    [
        NOT_APPLIED,
        {"status": 503, "body": "busy"},
        {"exception": aiohttp.ClientConnectorError(REFUSED_KEY, OSError(111, "refused"))},
    ],
    ids=["engine-unreachable", "503", "never-connected"],
)
async def test_create_session_is_retried_when_nothing_was_applied(
    client: OsviClient, mocked: aioresponses, failure: dict[str, Any]
) -> None:
    """Failures that prove nothing was applied are retried; the session then opens."""
    mocked.post(CREATE_URL, **failure)
    mocked.post(CREATE_URL, payload=ok(session_json()))
    session = await client.create_session(AGENT, CUSTOMER)
    assert session.id == SESSION_ID
    assert len(sent(mocked, "POST", CREATE_URL)) == 2


async def test_retry_ambiguous_true_overrides_the_at_most_once_class(
    client: OsviClient, mocked: aioresponses, fake_sleep: FakeSleep
) -> None:
    """RetryPolicy(retry_ambiguous=True) per call retries create after a maybe-applied 502."""
    mocked.post(CREATE_URL, **MAYBE_APPLIED)
    mocked.post(CREATE_URL, payload=ok(session_json()))
    policy = RetryPolicy(retry_ambiguous=True, sleep=fake_sleep, random=lambda: 0.5)
    session = await client.create_session(AGENT, CUSTOMER, retry=policy)
    assert session.id == SESSION_ID
    assert len(sent(mocked, "POST", CREATE_URL)) == 2


async def test_create_session_validation_error_lists_every_problem(
    client: OsviClient, mocked: aioresponses
) -> None:
    """A 422 `errors` list is a BadRequestError with each message in `errors`."""
    body = {"success": False, "errors": ["agent_uuid is required", "customer_id is required"]}
    mocked.post(CREATE_URL, status=422, payload=body)
    with pytest.raises(BadRequestError) as caught:
        await client.create_session(AGENT, CUSTOMER)
    assert caught.value.errors == ("agent_uuid is required", "customer_id is required")
    assert caught.value.status == 422
    assert len(sent(mocked, "POST", CREATE_URL)) == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"agent_uuid": " ", "customer_id": CUSTOMER}, "agent_uuid must not be empty"),
        ({"agent_uuid": AGENT, "customer_id": ""}, "customer_id must not be empty"),
        ({"agent_uuid": AGENT, "customer_id": 5}, "customer_id must be a str"),
        (
            {"agent_uuid": AGENT, "customer_id": CUSTOMER, "input_fields": ["a"]},
            "input_fields must be a mapping",
        ),
        (
            {"agent_uuid": AGENT, "customer_id": CUSTOMER, "input_fields": {"a": object()}},
            "cannot be sent as JSON",
        ),
        ({"agent_uuid": AGENT, "customer_id": CUSTOMER, "context": "one"}, "list of strings"),
        ({"agent_uuid": AGENT, "customer_id": CUSTOMER, "context": ["a", " "]}, "context"),
        ({"agent_uuid": "\ud800", "customer_id": CUSTOMER}, "not valid Unicode"),
        ({"agent_uuid": AGENT, "customer_id": "a\nb"}, "printable"),
        ({"agent_uuid": AGENT, "customer_id": " cus5 "}, "must not start or end with whitespace"),
        ({"agent_uuid": "\u200b", "customer_id": CUSTOMER}, "printable"),
        ({"agent_uuid": AGENT, "customer_id": "x" * 1001}, "at most 1000 characters"),
        (
            {"agent_uuid": AGENT, "customer_id": CUSTOMER, "input_fields": {"a": float("nan")}},
            "input_fields cannot be sent as JSON",
        ),
        (
            {"agent_uuid": AGENT, "customer_id": CUSTOMER, "input_fields": {"a": "x" * 2_000_000}},
            "input_fields is .* bytes of JSON, more than max_context_bytes",
        ),
        ({"agent_uuid": AGENT, "customer_id": CUSTOMER, "context": ["a", None]}, r"context\[1\]"),
        (
            {"agent_uuid": AGENT, "customer_id": CUSTOMER, "input_fields": {1: "a", "1": "b"}},
            "keys must be strings",
        ),
        (
            {"agent_uuid": AGENT, "customer_id": CUSTOMER, "input_fields": DEEP},
            "nested too deeply",
        ),
    ],
)
async def test_create_session_refuses_bad_input_before_the_wire(
    client: OsviClient, mocked: aioresponses, arguments: dict[str, Any], message: str
) -> None:
    """Bad arguments are a ClientValidationError and nothing is sent."""
    with pytest.raises(ClientValidationError, match=message):
        await client.create_session(**arguments)
    assert not mocked.requests


# -- get_active_session(s) ---------------------------------------------------------------


async def test_get_active_session_encodes_the_query_and_decodes(
    client: OsviClient, mocked: aioresponses
) -> None:
    """The customer id is percent-encoded ("+" would read as a space)."""
    mocked.get(ACTIVE_URL, payload=ok(session_json()))
    session = await client.get_active_session(CUSTOMER, AGENT)
    assert session.customer_id == CUSTOMER
    assert len(sent(mocked, "GET", ACTIVE_URL)) == 1


async def test_get_active_session_404_is_not_found_with_a_hint(
    client: OsviClient, mocked: aioresponses
) -> None:
    """No active session: NotFoundError that says how to open one; never retried."""
    mocked.get(ACTIVE_URL, status=404, payload={"success": False, "error": "session_not_found"})
    with pytest.raises(NotFoundError) as caught:
        await client.get_active_session(CUSTOMER, AGENT)
    assert "no active session with this agent" in str(caught.value)
    assert caught.value.may_have_been_applied is False
    assert len(sent(mocked, "GET", ACTIVE_URL)) == 1


@pytest.mark.parametrize("retry_ambiguous", [None, False])
async def test_reads_are_retried_on_every_transient_failure(
    mocked: aioresponses, fake_sleep: FakeSleep, retry_ambiguous: bool | None
) -> None:
    """A read changes nothing: a timeout after sending is retried even at-most-once."""
    mocked.get(ACTIVE_URL, exception=TimeoutError())
    mocked.get(ACTIVE_URL, **MAYBE_APPLIED)
    mocked.get(ACTIVE_URL, payload=ok(session_json()))
    policy = RetryPolicy(retry_ambiguous=retry_ambiguous, sleep=fake_sleep, random=lambda: 0.5)
    async with OsviClient(TOKEN, base_url=BASE_URL, retry=policy) as client:
        session = await client.get_active_session(CUSTOMER, AGENT)
    assert session.id == SESSION_ID
    assert len(sent(mocked, "GET", ACTIVE_URL)) == 3


async def test_a_failed_read_never_says_it_may_have_been_applied(
    mocked: aioresponses, fake_sleep: FakeSleep
) -> None:
    """When retries run out on a read, may_have_been_applied stays False."""
    mocked.get(ACTIVE_URL, exception=TimeoutError(), repeat=True)
    policy = RetryPolicy(max_retries=1, sleep=fake_sleep)
    async with OsviClient(TOKEN, base_url=BASE_URL, retry=policy) as client:
        with pytest.raises(APITimeoutError) as caught:
            await client.get_active_session(CUSTOMER, AGENT)
    assert caught.value.may_have_been_applied is False
    assert caught.value.attempts == 2


@pytest.mark.parametrize(
    "answer",
    [{"payload": ok({})}, {"status": 404, "payload": {"success": False, "error": "not_found"}}],
    ids=["empty-object", "404"],
)
async def test_get_active_sessions_is_empty_when_there_are_none(
    client: OsviClient, mocked: aioresponses, answer: dict[str, Any]
) -> None:
    """An empty object and a 404 both mean: no active session."""
    mocked.get(ALL_ACTIVE_URL, **answer)
    assert dict(await client.get_active_sessions(CUSTOMER)) == {}


async def test_get_active_sessions_keys_sessions_by_agent(
    client: OsviClient, mocked: aioresponses
) -> None:
    """Each agent's session is decoded; the mapping is read-only."""
    other = "agent_second"
    data = {AGENT: session_json(), other: session_json(OTHER_SESSION, mode="support")}
    mocked.get(ALL_ACTIVE_URL, payload=ok(data))
    sessions = await client.get_active_sessions(CUSTOMER)
    assert list(sessions) == [AGENT, other]
    assert sessions[other].id == OTHER_SESSION
    assert sessions[other].mode == "support"
    with pytest.raises(TypeError):
        sessions["x"] = sessions[AGENT]  # type: ignore[index]


# -- decoding ----------------------------------------------------------------------------


async def test_decoding_is_lenient_about_ids_unknown_keys_and_naive_times(
    client: OsviClient, mocked: aioresponses
) -> None:
    """Any string id, unknown keys ignored, missing optional keys None, naive time is UTC."""
    record = {"id": "string", "created_at": "2026-11-30T10:00:00", "surprise": [1, 2]}
    mocked.get(ACTIVE_URL, payload=ok(record))
    session = await client.get_active_session(CUSTOMER, AGENT)
    assert session == ChatSession(id="string", created_at=datetime(2026, 11, 30, 10, 0, tzinfo=UTC))


@pytest.mark.parametrize(
    ("record", "path"),
    [
        ({"status": "active"}, "missing required key $.data.id"),
        ({"id": None}, "$.data.id"),
        ({"id": "s", "created_at": "yesterday"}, "$.data.created_at"),
        ({"id": "s", "metadata": {"context": "one"}}, "$.data.metadata.context"),
        ({"id": "s", "help_requested": "yes"}, "$.data.help_requested"),
        ({"id": "s", "mode": 3}, "$.data.mode"),
        ({"id": True}, "$.data.id"),
        ({"id": "s", "chat_agent_id": [1]}, "$.data.chat_agent_id"),
        ({"id": "s", "metadata": {"input_fields": []}}, "$.data.metadata.input_fields"),
        ({"id": "s", "metadata": "x"}, "$.data.metadata"),
        ({"id": "s", "created_at": 5}, "$.data.created_at"),
        ([{"id": "s"}], "expected an object at $.data"),
    ],
)
async def test_a_wrong_shape_names_its_json_path(
    client: OsviClient, mocked: aioresponses, record: object, path: str
) -> None:
    """A missing required key or a wrong type is a ResponseDecodeError naming the path."""
    mocked.get(ACTIVE_URL, payload=ok(record))
    with pytest.raises(ResponseDecodeError, match=path.replace("$", r"\$")):
        await client.get_active_session(CUSTOMER, AGENT)


# -- send_message ------------------------------------------------------------------------


async def test_send_message_sends_and_decodes_the_reply(
    client: OsviClient, mocked: aioresponses
) -> None:
    """The body carries the optional session id; the reply is decoded."""
    data = {"session_id": SESSION_ID, "reply": "Hello!", "state": "default", "mode": "ai"}
    mocked.post(INBOUND_URL, payload=ok({**data, "help_requested": False}))
    reply = await client.send_message(AGENT, CUSTOMER, "Hi", session_id=SESSION_ID)
    [request] = sent(mocked, "POST", INBOUND_URL)
    assert b'"session_id":"4718a326-417b-4dda-90d0-21fd65a11cb8"' in request.kwargs["data"]
    assert (reply.session_id, reply.reply, reply.state, reply.mode) == (
        SESSION_ID,
        "Hello!",
        "default",
        "ai",
    )
    assert reply.help_requested is False


async def test_send_message_is_not_retried_after_a_dropped_connection(
    client: OsviClient, mocked: aioresponses
) -> None:
    """A message that may have been delivered is not sent twice."""
    mocked.post(INBOUND_URL, exception=aiohttp.ServerDisconnectedError())
    mocked.post(INBOUND_URL, payload=ok({"session_id": SESSION_ID, "reply": "x"}))
    with pytest.raises(APIConnectionError) as caught:
        await client.send_message(AGENT, CUSTOMER, "Hi")
    assert len(sent(mocked, "POST", INBOUND_URL)) == 1
    assert caught.value.may_have_been_applied is True
    assert str(caught.value).startswith(
        "send_message for customer '+15551112222' with agent 'agent_IsZ3Q6Sf_60Eh26XQMGbz-R_og':"
        " Connection failed after the request was sent"
    )
    assert "may show the customer the exchange twice" in str(caught.value)


async def test_send_message_missing_reply_names_the_key(
    client: OsviClient, mocked: aioresponses
) -> None:
    """A reply without `reply` is a ResponseDecodeError naming $.data.reply."""
    mocked.post(INBOUND_URL, payload=ok({"session_id": SESSION_ID}))
    with pytest.raises(ResponseDecodeError, match=r"\$\.data\.reply"):
        await client.send_message(AGENT, CUSTOMER, "Hi")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((AGENT, CUSTOMER, "   "), "content must not be empty"),
        ((AGENT, "", "hi"), "customer_id must not be empty"),
        (("", CUSTOMER, "hi"), "agent_uuid must not be empty"),
    ],
)
async def test_send_message_refuses_blank_input(
    client: OsviClient, mocked: aioresponses, arguments: tuple[str, str, str], message: str
) -> None:
    """Blank arguments never reach the wire."""
    with pytest.raises(ClientValidationError, match=message):
        await client.send_message(*arguments)
    with pytest.raises(ClientValidationError, match="session UUID"):
        await client.send_message(AGENT, CUSTOMER, "hi", session_id="../x")
    assert not mocked.requests


# -- support -----------------------------------------------------------------------------


def support_ok(command: str | None, **extra: Any) -> dict[str, Any]:
    """A support success for SESSION_ID."""
    return ok({"state": "ok", "session_id": SESSION_ID, "command": command, **extra})


@pytest.mark.parametrize(
    ("command", "message", "extra"),
    [
        ("takeover", None, {"active_human": "sam@example.com"}),
        ("tell", "Offer a callback", {"reply": "Shall we call you back?"}),
        ("whisper", "Customer is a VIP", {}),
        ("end", None, {}),
        ("close", None, {}),
        (None, "Hi, this is Sam", {}),
    ],
)
async def test_support_sends_each_command_and_decodes(
    client: OsviClient,
    mocked: aioresponses,
    command: str | None,
    message: str | None,
    extra: dict[str, Any],
) -> None:
    """Only the given fields are sent; the result carries reply / active_human when given."""
    mocked.post(SUPPORT_URL, payload=support_ok(command, **extra))
    result = await client.support(SESSION_ID, command, message)
    [request] = sent(mocked, "POST", SUPPORT_URL)
    expected: dict[str, str] = {}
    if command is not None:
        expected["command"] = command
    if message is not None:
        expected["message"] = message
    import json

    assert json.loads(request.kwargs["data"]) == expected
    assert (result.session_id, result.state, result.command) == (SESSION_ID, "ok", command)
    assert result.reply == extra.get("reply")
    assert result.active_human == extra.get("active_human")


@pytest.mark.parametrize(
    ("command", "message", "text"),
    [
        ("tell", None, "message is required for tell"),
        ("whisper", None, "message is required for whisper"),
        (None, None, "message is required for a plain operator message"),
        ("shout", "x", "command must be one of"),
        ("whisper", " ", "message must not be empty"),
    ],
)
async def test_support_refuses_bad_commands_before_the_wire(
    client: OsviClient, mocked: aioresponses, command: str | None, message: str | None, text: str
) -> None:
    """Unknown commands and missing messages are ClientValidationErrors; nothing is sent."""
    with pytest.raises(ClientValidationError, match=text):
        await client.support(SESSION_ID, command, message)
    assert not mocked.requests


@pytest.mark.parametrize(
    ("command", "message", "requests", "possible_duplicate"),
    [
        ("takeover", None, 2, False),  # idempotent: retried
        ("end", None, 2, False),
        ("whisper", "note", 2, True),  # at least once: retried and flagged
        ("takeover", "joining", 1, None),  # the message may reach the customer: not retried
        ("tell", "guidance", 1, None),
        (None, "hello", 1, None),
        ("end", "Handing you back to our assistant", 1, None),  # the message reaches the customer
        ("close", "Goodbye", 1, None),
    ],
)
async def test_support_retry_class_per_command(
    client: OsviClient,
    mocked: aioresponses,
    command: str | None,
    message: str | None,
    requests: int,
    possible_duplicate: bool | None,
) -> None:
    """After a maybe-applied 502, the server sees 2 requests or 1 depending on the command."""
    mocked.post(SUPPORT_URL, **MAYBE_APPLIED)
    mocked.post(SUPPORT_URL, payload=support_ok(command))
    if possible_duplicate is None:
        with pytest.raises(EngineError) as caught:
            await client.support(SESSION_ID, command, message)
        assert caught.value.may_have_been_applied is True
        assert "may show" in str(caught.value)
    else:
        result = await client.support(SESSION_ID, command, message)
        assert result.possible_duplicate is possible_duplicate
    assert len(sent(mocked, "POST", SUPPORT_URL)) == requests


async def test_close_retried_into_a_404_says_it_may_already_be_closed(
    client: OsviClient, mocked: aioresponses
) -> None:
    """A close that timed out and then finds no session tells the caller why."""
    mocked.post(SUPPORT_URL, exception=TimeoutError())
    mocked.post(SUPPORT_URL, status=404, payload={"success": False, "error": "session_not_found"})
    with pytest.raises(NotFoundError) as caught:
        await client.close_session(SESSION_ID)
    assert caught.value.may_have_been_applied is True
    assert "may already be closed by the request that failed" in str(caught.value)
    assert len(sent(mocked, "POST", SUPPORT_URL)) == 2


async def test_tell_during_takeover_is_an_engine_refusal_never_retried(
    client: OsviClient, mocked: aioresponses
) -> None:
    """The documented 502 with upstream_body.state rejected is EngineRejectedError."""
    body = {
        "success": False,
        "error": f"Python engine returned 422 for POST /v1/chat/session/{SESSION_ID}/support",
        "upstream_body": {"state": "rejected", "reason": "tell_not_allowed_during_takeover"},
    }
    mocked.post(SUPPORT_URL, status=502, payload=body)
    with pytest.raises(EngineRejectedError) as caught:
        await client.support(SESSION_ID, "tell", "Offer a callback")
    assert caught.value.upstream_body == body["upstream_body"]
    assert caught.value.may_have_been_applied is False
    assert "tell_not_allowed_during_takeover" in str(caught.value)
    assert len(sent(mocked, "POST", SUPPORT_URL)) == 1


async def test_a_support_answer_for_another_session_is_a_decode_error(
    client: OsviClient, mocked: aioresponses
) -> None:
    """The command may have been applied; the answer is not ours: maybe applied, raised."""
    mocked.post(SUPPORT_URL, payload=ok({"state": "ok", "session_id": "string", "command": "end"}))
    with pytest.raises(ResponseDecodeError) as caught:
        await client.support(SESSION_ID, "end")
    assert caught.value.may_have_been_applied is True
    assert "'string', not the session" in str(caught.value)


async def test_support_result_requires_command_key(
    client: OsviClient, mocked: aioresponses
) -> None:
    """`command` is required (it may be null): leaving it out names $.data.command."""
    mocked.post(SUPPORT_URL, payload=ok({"state": "ok", "session_id": SESSION_ID}))
    with pytest.raises(ResponseDecodeError, match=r"\$\.data\.command"):
        await client.support(SESSION_ID, "end")


# -- inject_context_for_customer ---------------------------------------------------------


def inject_url(session_id: str) -> str:
    """The inject_context URL of a session."""
    return f"{BASE_URL}/v1/chat/session/{session_id}/inject_context"


async def test_inject_for_customer_looks_up_once_then_uses_the_cache(
    client: OsviClient, mocked: aioresponses
) -> None:
    """The first call looks the session up; the next ones go straight to inject_context."""
    mocked.get(ACTIVE_URL, payload=ok(session_json()))
    mocked.post(inject_url(SESSION_ID), payload=inject_ok(), repeat=True)
    for _ in range(3):
        result = await client.inject_context_for_customer(CUSTOMER, AGENT, "Voice call: refund")
        assert result.session_id == SESSION_ID
    assert len(sent(mocked, "GET", ACTIVE_URL)) == 1
    assert len(sent(mocked, "POST", inject_url(SESSION_ID))) == 3


async def test_concurrent_calls_share_one_lookup(client: OsviClient, mocked: aioresponses) -> None:
    """Twenty tasks for one customer on a cold cache send one GET between them."""
    mocked.get(ACTIVE_URL, payload=ok(session_json()))
    mocked.post(inject_url(SESSION_ID), payload=inject_ok(), repeat=True)
    results = await asyncio.gather(
        *(client.inject_context_for_customer(CUSTOMER, AGENT, f"n{n}") for n in range(20))
    )
    assert {result.session_id for result in results} == {SESSION_ID}
    assert len(sent(mocked, "GET", ACTIVE_URL)) == 1


async def test_a_closed_cached_session_is_looked_up_again(
    client: OsviClient, mocked: aioresponses
) -> None:
    """404 session_not_found on the cached session: one more lookup, inject in the new one."""
    mocked.get(ACTIVE_URL, payload=ok(session_json()))
    mocked.get(ACTIVE_URL, payload=ok(session_json(OTHER_SESSION)))
    mocked.post(inject_url(SESSION_ID), payload=inject_ok())
    gone = {"success": False, "error": "session_not_found"}
    mocked.post(inject_url(SESSION_ID), status=404, payload=gone)
    mocked.post(inject_url(OTHER_SESSION), payload=inject_ok(OTHER_SESSION), repeat=True)
    first = await client.inject_context_for_customer(CUSTOMER, AGENT, "one")
    second = await client.inject_context_for_customer(CUSTOMER, AGENT, "two")
    third = await client.inject_context_for_customer(CUSTOMER, AGENT, "three")
    assert (first.session_id, second.session_id, third.session_id) == (
        SESSION_ID,
        OTHER_SESSION,
        OTHER_SESSION,
    )
    assert len(sent(mocked, "GET", ACTIVE_URL)) == 2


async def test_inject_for_customer_without_active_session_is_not_found(
    client: OsviClient, mocked: aioresponses
) -> None:
    """No active session: NotFoundError, nothing injected anywhere."""
    mocked.get(ACTIVE_URL, status=404, payload={"success": False, "error": "session_not_found"})
    with pytest.raises(NotFoundError, match="no active session with this agent"):
        await client.inject_context_for_customer(CUSTOMER, AGENT, "note")
    assert [key for key in mocked.requests if key[0] == "POST"] == []


async def test_the_cache_expires_after_its_ttl(mocked: aioresponses) -> None:
    """session_cache_ttl=0 looks the session up on every call."""
    mocked.get(ACTIVE_URL, payload=ok(session_json()), repeat=True)
    mocked.post(inject_url(SESSION_ID), payload=inject_ok(), repeat=True)
    async with OsviClient(TOKEN, base_url=BASE_URL, session_cache_ttl=0) as client:
        for _ in range(3):
            await client.inject_context_for_customer(CUSTOMER, AGENT, "note")
    assert len(sent(mocked, "GET", ACTIVE_URL)) == 3


async def test_create_and_send_message_fill_the_cache_and_close_empties_it(
    client: OsviClient, mocked: aioresponses
) -> None:
    """A session just created is used without a lookup; after close it is looked up."""
    mocked.post(CREATE_URL, payload=ok(session_json()))
    mocked.post(inject_url(SESSION_ID), payload=inject_ok(), repeat=True)
    mocked.post(SUPPORT_URL, payload=support_ok("close"))
    mocked.get(ACTIVE_URL, status=404, payload={"success": False, "error": "session_not_found"})
    await client.create_session(AGENT, CUSTOMER)
    await client.inject_context_for_customer(CUSTOMER, AGENT, "note")
    assert sent(mocked, "GET", ACTIVE_URL) == []
    await client.close_session(SESSION_ID)
    with pytest.raises(NotFoundError):
        await client.inject_context_for_customer(CUSTOMER, AGENT, "note")
    assert len(sent(mocked, "GET", ACTIVE_URL)) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"session_cache_ttl": -1}, "session_cache_ttl"),
        ({"session_cache_ttl": float("nan")}, "session_cache_ttl"),
        ({"session_cache_size": 0}, "session_cache_size"),
        ({"session_cache_size": True}, "session_cache_size"),
    ],
)
def test_bad_cache_options_are_validation_errors(options: dict[str, Any], message: str) -> None:
    """Cache options are checked like every other option."""
    with pytest.raises(ClientValidationError, match=message):
        OsviClient(TOKEN, base_url=BASE_URL, **options)


async def test_with_options_shares_the_pool_and_the_cache(
    client: OsviClient, mocked: aioresponses
) -> None:
    """A view looks nothing up that its client already knows, and its close is a no-op."""
    mocked.get(ACTIVE_URL, payload=ok(session_json()))
    mocked.post(inject_url(SESSION_ID), payload=inject_ok(), repeat=True)
    await client.inject_context_for_customer(CUSTOMER, AGENT, "note")
    view = client.with_options(timeout=2.0)
    assert isinstance(view, OsviClient)
    assert view.timeout == 2.0
    assert client.timeout == 30.0
    await view.inject_context_for_customer(CUSTOMER, AGENT, "note")
    await view.close()
    assert not client.closed
    assert len(sent(mocked, "GET", ACTIVE_URL)) == 1


async def test_server_error_messages_name_the_operation(
    client: OsviClient, mocked: aioresponses, fake_sleep: FakeSleep
) -> None:
    """A 500 on a lookup says which call failed, for which customer."""
    mocked.get(ACTIVE_URL, status=500, payload={"success": False, "error": "internal"})
    with pytest.raises(ServerError) as caught:
        await client.get_active_session(CUSTOMER, AGENT)
    assert str(caught.value).startswith("get_active_session for customer '+15551112222' with agent")


async def test_get_active_sessions_refuses_one_session_where_a_map_belongs(
    client: OsviClient, mocked: aioresponses
) -> None:
    """A single session record (the spec's other oneOf branch) has no agent key: refused."""
    mocked.get(ALL_ACTIVE_URL, payload=ok(session_json()))
    with pytest.raises(ResponseDecodeError, match="got a single session"):
        await client.get_active_sessions(CUSTOMER)


async def test_an_agent_mapped_to_null_has_no_session(
    client: OsviClient, mocked: aioresponses
) -> None:
    """`{agent: null}` in the by-agent map is read as no active session with that agent."""
    mocked.get(ALL_ACTIVE_URL, payload=ok({AGENT: session_json(), "agent_gone": None}))
    assert list(await client.get_active_sessions(CUSTOMER)) == [AGENT]


async def test_a_token_echoed_into_a_reply_is_redacted(
    client: OsviClient, mocked: aioresponses
) -> None:
    """A server echoing the API-Token header into the agent's reply never hands it back."""
    data = {"session_id": SESSION_ID, "reply": f"your header was {TOKEN}", "state": TOKEN}
    mocked.post(INBOUND_URL, payload=ok(data))
    reply = await client.send_message(AGENT, CUSTOMER, "Hi")
    assert TOKEN not in repr(reply)
    assert reply.reply == "your header was [REDACTED]"


async def test_create_session_sends_big_integers_in_input_fields(
    client: OsviClient, mocked: aioresponses
) -> None:
    """Any JSON number is fine in input_fields, even one past 64 bits."""
    mocked.post(CREATE_URL, payload=ok(session_json()))
    await client.create_session(AGENT, CUSTOMER, input_fields={"order": 2**70})
    [request] = sent(mocked, "POST", CREATE_URL)
    assert b'"order":1180591620717411303424' in request.kwargs["data"]


async def test_content_and_message_are_held_to_max_context_bytes(mocked: aioresponses) -> None:
    """A message over the limit is refused before the upload, like a context."""
    async with OsviClient(TOKEN, base_url=BASE_URL, max_context_bytes=10) as client:
        with pytest.raises(ClientValidationError, match="content is 11 bytes"):
            await client.send_message(AGENT, CUSTOMER, "x" * 11)
        with pytest.raises(ClientValidationError, match="message is 11 bytes"):
            await client.support(SESSION_ID, "tell", "x" * 11)
    assert not mocked.requests


async def test_the_lookup_keeps_to_the_calls_own_retry_policy(
    client: OsviClient, mocked: aioresponses
) -> None:
    """retry=RetryPolicy.none() on inject_context_for_customer: one lookup, not four."""
    mocked.get(ACTIVE_URL, status=503, body="busy", repeat=True)
    with pytest.raises(ServerError) as caught:
        await client.inject_context_for_customer(CUSTOMER, AGENT, "note", retry=RetryPolicy.none())
    assert caught.value.attempts == 1
    assert len(sent(mocked, "GET", ACTIVE_URL)) == 1


async def test_a_looked_up_session_that_is_not_a_uuid_is_never_requested(
    client: OsviClient, mocked: aioresponses
) -> None:
    """An active session named "../admin" is refused before any path is built from it."""
    mocked.get(ACTIVE_URL, payload=ok(session_json("../../admin?x=1")))
    with pytest.raises(ResponseDecodeError, match="not a session UUID"):
        await client.inject_context_for_customer(CUSTOMER, AGENT, "note")
    assert [key for key in mocked.requests if key[0] == "POST"] == []


async def test_a_message_to_a_named_session_does_not_fill_the_cache(
    client: OsviClient, mocked: aioresponses
) -> None:
    """send_message(session_id=...) says nothing about the pair's active session."""
    reply = ok({"session_id": OTHER_SESSION, "reply": "hi"})
    mocked.post(INBOUND_URL, payload=reply)
    mocked.get(ACTIVE_URL, payload=ok(session_json()))
    mocked.post(inject_url(SESSION_ID), payload=inject_ok())
    await client.send_message(AGENT, CUSTOMER, "hi", session_id=OTHER_SESSION)
    result = await client.inject_context_for_customer(CUSTOMER, AGENT, "note")
    assert result.session_id == SESSION_ID
    assert len(sent(mocked, "GET", ACTIVE_URL)) == 1


async def test_a_reply_from_another_session_than_the_one_named_is_refused(
    client: OsviClient, mocked: aioresponses
) -> None:
    """The answer is not for our request: a decode error, maybe applied."""
    mocked.post(INBOUND_URL, payload=ok({"session_id": OTHER_SESSION, "reply": "hi"}))
    with pytest.raises(ResponseDecodeError) as caught:
        await client.send_message(AGENT, CUSTOMER, "hi", session_id=SESSION_ID)
    assert caught.value.may_have_been_applied is True


async def test_retry_ambiguous_true_flags_a_resent_message(
    client: OsviClient, mocked: aioresponses, fake_sleep: FakeSleep
) -> None:
    """Overriding at most once leaves a trace: the reply says it may be a duplicate."""
    mocked.post(INBOUND_URL, **MAYBE_APPLIED)
    mocked.post(INBOUND_URL, payload=ok({"session_id": SESSION_ID, "reply": "hi"}))
    policy = RetryPolicy(retry_ambiguous=True, sleep=fake_sleep)
    reply = await client.send_message(AGENT, CUSTOMER, "hi", retry=policy)
    assert reply.possible_duplicate is True


async def test_a_support_answer_for_another_command_is_refused(
    client: OsviClient, mocked: aioresponses
) -> None:
    """A close answered as an end answers some other request."""
    mocked.post(SUPPORT_URL, payload=support_ok("end"))
    with pytest.raises(ResponseDecodeError, match="not the 'close' this request sent"):
        await client.close_session(SESSION_ID)


def test_one_deadline_covers_the_lookup_and_the_inject() -> None:
    """What the lookup used is gone for the inject; past the deadline nothing more is sent."""
    import time

    from osvi_async._client import _deadline_left

    policy = RetryPolicy(deadline=10.0)
    assert _deadline_left(RetryPolicy(), time.monotonic()).deadline is None
    left = _deadline_left(policy, time.monotonic() - 4.0).deadline
    assert left is not None
    assert 5.9 < left <= 6.0
    with pytest.raises(APITimeoutError) as caught:
        _deadline_left(policy, time.monotonic() - 10.5)
    assert caught.value.request_sent is False


async def test_get_active_sessions_raises_a_404_that_is_not_the_apis(
    client: OsviClient, mocked: aioresponses
) -> None:
    """A proxy's HTML 404 (a wrong base_url) is not "no sessions": it is raised."""
    mocked.get(ALL_ACTIVE_URL, status=404, body="<html>Not Found</html>", content_type="text/html")
    with pytest.raises(NotFoundError):
        await client.get_active_sessions(CUSTOMER)


async def test_a_resend_addressed_by_customer_is_flagged(
    client: OsviClient, mocked: aioresponses
) -> None:
    """inject_context_for_customer(may_have_been_applied=True) flags the result."""
    mocked.get(ACTIVE_URL, payload=ok(session_json()))
    mocked.post(inject_url(SESSION_ID), payload=inject_ok())
    result = await client.inject_context_for_customer(
        CUSTOMER, AGENT, "Voice call: refund", may_have_been_applied=True
    )
    assert result.possible_duplicate is True
