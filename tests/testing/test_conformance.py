"""The emulator answers like the OSVI Chat v1 API: statuses, error codes, session rules."""

from __future__ import annotations

import string
import uuid

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from osvi_async.testing import BUCKET_SIZE, OsviEmulator
from tests.testing.helpers import Api

UNAUTHORIZED = {"success": False, "error": "unauthorized"}
NOT_FOUND = {"success": False, "error": "session_not_found"}


# --- Auth and routing -----------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token-1234", ""])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/chat/session"),
        ("GET", "/v1/chat/session/active?customer_id=c1"),
        ("POST", "/v1/chat/session/{id}/support"),
        ("POST", "/v1/chat/session/{id}/inject_context"),
    ],
)
async def test_every_endpoint_rejects_a_missing_or_wrong_token(
    api: Api, osvi_session_id: str, token: str | None, method: str, path: str
) -> None:
    """Without the emulator's API-Token every endpoint answers 401 unauthorized."""
    body = {"context": "x"} if method == "POST" else None
    reply = await api.request(method, path.format(id=osvi_session_id), body=body, token=token)
    assert (reply.status, reply.json) == (401, UNAUTHORIZED)


async def test_auth_is_checked_before_the_session(api: Api) -> None:
    """A wrong token on an unknown session answers 401, not 404."""
    reply = await api.inject(str(uuid.uuid4()), {"context": "x"}, token="nope")
    assert reply.status == 401


async def test_a_rejected_token_changes_nothing(api: Api, osvi_emulator: OsviEmulator) -> None:
    """A 401 leaves the bucket alone but still counts as a request for the session."""
    session_id = osvi_emulator.create_session()
    await api.inject(session_id, {"context": "x"}, token=None)
    assert osvi_emulator.bucket(session_id) == ()
    assert osvi_emulator.requests_for(session_id) == 1


async def test_unknown_route_and_wrong_method(api: Api) -> None:
    """An unknown path answers 404 not_found; a known path with the wrong method answers 405."""
    unknown = await api.request("GET", "/v1/nothing")
    wrong_method = await api.request("GET", "/v1/chat/session")
    assert (unknown.status, unknown.json["error"]) == (404, "not_found")
    assert (wrong_method.status, wrong_method.headers["Allow"]) == (405, "POST")


def test_generated_token_is_16_alphanumerics_and_never_in_repr() -> None:
    """The generated token looks like an API token and the emulator's repr hides it."""
    emulator = OsviEmulator()
    token = emulator.api_token
    assert len(token) == 16
    assert set(token) <= set(string.ascii_letters + string.digits)
    assert token not in repr(emulator)


async def test_a_chosen_token_is_the_one_accepted(unused_tcp_port: int) -> None:
    """An emulator built with api_token accepts exactly that token, on the port asked for."""
    async with OsviEmulator(api_token="T" * 16, port=unused_tcp_port) as emulator:
        assert emulator.base_url == f"http://127.0.0.1:{unused_tcp_port}"
        async with aiohttp.ClientSession(base_url=emulator.base_url) as http:
            api = Api(http, "T" * 16)
            reply = await api.inject(emulator.create_session(), {"context": "x"})
    assert reply.status == 200


# --- inject_context -------------------------------------------------------------------------


async def test_inject_context_appends_and_returns_the_bucket(
    api: Api, osvi_emulator: OsviEmulator, osvi_session_id: str
) -> None:
    """A valid entry answers 200 with the session id and the bucket after the append."""
    reply = await api.inject(osvi_session_id, {"context": "Earlier call: wants a refund."})
    assert reply.status == 200
    assert reply.json == {
        "success": True,
        "data": {"session_id": osvi_session_id, "context": ["Earlier call: wants a refund."]},
    }
    assert osvi_emulator.applied(osvi_session_id) == ("Earlier call: wants a refund.",)


async def test_bucket_keeps_the_five_most_recent_entries(
    api: Api, osvi_emulator: OsviEmulator
) -> None:
    """After 7 entries the bucket holds the last 5, oldest first; applied() keeps all 7."""
    session_id = osvi_emulator.create_session(context=["initial"])
    entries = [f"entry {n}" for n in range(7)]
    replies = [await api.inject(session_id, {"context": entry}) for entry in entries]
    expected = (["initial", *entries])[-BUCKET_SIZE:]
    assert replies[-1].json["data"]["context"] == expected
    assert replies[3].json["data"]["context"] == ["initial", *entries[:4]]
    assert osvi_emulator.bucket(session_id) == tuple(expected)
    assert osvi_emulator.applied(session_id) == tuple(entries)


@pytest.mark.parametrize("raw", [b"not json", b"", b"[1, 2]", b'"context"', b"null"])
async def test_a_body_that_is_not_a_json_object_is_invalid_json(
    api: Api, osvi_emulator: OsviEmulator, osvi_session_id: str, raw: bytes
) -> None:
    """Malformed JSON or a non-object body answers 400 invalid_json and applies nothing."""
    reply = await api.inject(osvi_session_id, raw=raw)
    assert (reply.status, reply.json) == (400, {"success": False, "error": "invalid_json"})
    assert osvi_emulator.applied(osvi_session_id) == ()


@pytest.mark.parametrize("body", [{}, {"context": None}, {"context": ""}, {"context": " \n\t"}])
async def test_missing_or_blank_context_is_context_required(
    api: Api, osvi_emulator: OsviEmulator, osvi_session_id: str, body: dict[str, object]
) -> None:
    """No context, null, or only whitespace answers 400 context_required."""
    reply = await api.inject(osvi_session_id, body)
    assert (reply.status, reply.json) == (400, {"success": False, "error": "context_required"})
    assert osvi_emulator.applied(osvi_session_id) == ()


@pytest.mark.parametrize("value", [1, 2.5, True, ["x"], {"text": "x"}])
async def test_non_string_context_is_rejected(
    api: Api, osvi_emulator: OsviEmulator, osvi_session_id: str, value: object
) -> None:
    """A context that is not a string answers 400 'context must be a string'."""
    reply = await api.inject(osvi_session_id, {"context": value})
    assert reply.status == 400
    assert reply.json == {"success": False, "error": "context must be a string"}
    assert osvi_emulator.applied(osvi_session_id) == ()


async def test_unknown_session_is_session_not_found(api: Api) -> None:
    """An id the emulator never issued answers 404 session_not_found."""
    reply = await api.inject(str(uuid.uuid4()), {"context": "x"})
    assert (reply.status, reply.json) == (404, NOT_FOUND)


async def test_closed_session_is_session_not_found(
    api: Api, osvi_emulator: OsviEmulator, osvi_session_id: str
) -> None:
    """After close_session, inject_context answers 404 and the bucket stays as it was."""
    await api.inject(osvi_session_id, {"context": "before"})
    osvi_emulator.close_session(osvi_session_id)
    reply = await api.inject(osvi_session_id, {"context": "after"})
    assert (reply.status, reply.json) == (404, NOT_FOUND)
    assert osvi_emulator.bucket(osvi_session_id) == ("before",)


async def test_session_is_looked_up_before_the_body(api: Api) -> None:
    """An unknown session with a bad body answers 404, not 400."""
    reply = await api.inject(str(uuid.uuid4()), raw=b"not json")
    assert (reply.status, reply.json) == (404, NOT_FOUND)


async def test_requests_for_counts_every_outcome(
    api: Api, osvi_emulator: OsviEmulator, osvi_session_id: str
) -> None:
    """requests_for counts 200, 400 and 401 answers alike, per session."""
    await api.inject(osvi_session_id, {"context": "ok"})
    await api.inject(osvi_session_id, {})
    await api.inject(osvi_session_id, {"context": "x"}, token=None)
    assert osvi_emulator.requests_for(osvi_session_id) == 3
    assert osvi_emulator.requests_for("never-seen") == 0
    assert osvi_emulator.stats.requests_total == 3


# --- Create session -------------------------------------------------------------------------


async def test_create_session_returns_the_full_record(api: Api) -> None:
    """POST /v1/chat/session answers 200 with every ChatSession field, context capped at 5."""
    context = ["", "c1", "c2", "  ", "c3", "c4", "c5", "c6"]
    body = {
        "agent_uuid": "agent_A",
        "customer_id": "+15551112222",
        "input_fields": {"first_name": "Alex"},
        "context": context,
    }
    reply = await api.create(body)
    assert reply.status == 200
    assert reply.json["success"] is True
    data = reply.json["data"]
    assert uuid.UUID(data["id"]).version == 4
    assert isinstance(data["chat_agent_id"], int)
    assert isinstance(data["account_id"], int)
    assert {key: data[key] for key in ("customer_id", "mode", "help_requested", "status")} == {
        "customer_id": "+15551112222",
        "mode": "ai",
        "help_requested": False,
        "status": "active",
    }
    assert data["current_state"] is None
    assert data["active_human"] is None
    assert data["metadata"] == {
        "input_fields": {"first_name": "Alex"},
        "state_fields": {},
        "context": ["c2", "c3", "c4", "c5", "c6"],
    }
    assert data["created_at"].endswith("Z")
    assert data["updated_at"].endswith("Z")


async def test_create_session_lists_every_missing_field(api: Api) -> None:
    """Missing agent_uuid and customer_id answer 422 with both messages in errors."""
    reply = await api.create({})
    assert reply.status == 422
    assert reply.json == {
        "success": False,
        "errors": ["agent_uuid is required", "customer_id is required"],
    }


async def test_create_session_rejects_mistyped_fields(api: Api) -> None:
    """Fields of the wrong type answer 422, one message per field."""
    body = {"agent_uuid": 7, "customer_id": "c", "input_fields": [], "context": "x"}
    reply = await api.create(body)
    assert reply.status == 422
    assert reply.json["errors"] == [
        "agent_uuid must be a string",
        "input_fields must be an object",
        "context must be an array of strings",
    ]


async def test_one_active_session_per_customer_and_agent(api: Api) -> None:
    """Opening a second session for the same pair closes the first; other agents are untouched."""
    pair = {"agent_uuid": "agent_A", "customer_id": "cust"}
    first = (await api.create(pair)).json["data"]["id"]
    other_agent = (await api.create({**pair, "agent_uuid": "agent_B"})).json["data"]["id"]
    second = (await api.create(pair)).json["data"]["id"]
    assert (await api.inject(first, {"context": "x"})).status == 404
    assert (await api.inject(second, {"context": "x"})).status == 200
    assert (await api.inject(other_agent, {"context": "x"})).status == 200
    active = await api.active({"customer_id": "cust", "agent_uuid": "agent_A"})
    assert active.json["data"]["id"] == second


def test_create_session_directly_gives_independent_sessions() -> None:
    """create_session() without a customer opens a new customer each time, so none is closed."""
    emulator = OsviEmulator()
    first = emulator.create_session()
    second = emulator.create_session(context=["a", "", "b"])
    assert first != second
    assert emulator.bucket(first) == ()
    assert emulator.bucket(second) == ("a", "b")
    emulator.create_session(customer_id="same")
    emulator.create_session(customer_id="same")
    with pytest.raises(KeyError, match="no emulated session"):
        emulator.bucket("missing")


@given(context=st.lists(st.text(alphabet=" ab", max_size=3), max_size=12))
def test_initial_context_keeps_the_five_latest_non_blank(context: list[str]) -> None:
    """For any initial context the bucket is its last 5 non-blank entries, oldest first."""
    emulator = OsviEmulator()
    session_id = emulator.create_session(context=context)
    expected = [entry for entry in context if entry.strip()][-BUCKET_SIZE:]
    assert emulator.bucket(session_id) == tuple(expected)
    assert emulator.applied(session_id) == ()


# --- Active session lookup ------------------------------------------------------------------


async def test_active_lookup_with_and_without_agent(api: Api, osvi_emulator: OsviEmulator) -> None:
    """With agent_uuid: the session or 404; without: every active session keyed by agent."""
    session_a = osvi_emulator.create_session(agent_uuid="agent_A", customer_id="cust")
    session_b = osvi_emulator.create_session(agent_uuid="agent_B", customer_id="cust")
    one = await api.active({"customer_id": "cust", "agent_uuid": "agent_A"})
    everything = await api.active({"customer_id": "cust"})
    none = await api.active({"customer_id": "cust", "agent_uuid": "agent_C"})
    assert (one.status, one.json["data"]["id"]) == (200, session_a)
    assert everything.status == 200
    assert {agent: s["id"] for agent, s in everything.json["data"].items()} == {
        "agent_A": session_a,
        "agent_B": session_b,
    }
    assert (none.status, none.json) == (404, NOT_FOUND)


async def test_active_lookup_skips_closed_sessions_and_needs_a_customer(
    api: Api, osvi_emulator: OsviEmulator
) -> None:
    """A closed session is not active; a lookup without customer_id answers 422."""
    session_id = osvi_emulator.create_session(agent_uuid="agent_A", customer_id="cust")
    osvi_emulator.close_session(session_id)
    closed = await api.active({"customer_id": "cust", "agent_uuid": "agent_A"})
    everything = await api.active({"customer_id": "cust"})
    missing = await api.active({})
    assert closed.status == 404
    assert (everything.status, everything.json["data"]) == (200, {})
    assert (missing.status, missing.json["errors"]) == (422, ["customer_id is required"])


# --- Support commands -----------------------------------------------------------------------


async def test_support_close_ends_the_session(
    api: Api, osvi_emulator: OsviEmulator, osvi_session_id: str
) -> None:
    """The close command answers ok; afterwards inject_context and support answer 404."""
    reply = await api.support(osvi_session_id, {"command": "close"})
    assert reply.status == 200
    assert reply.json == {
        "success": True,
        "data": {"state": "ok", "session_id": osvi_session_id, "command": "close"},
    }
    assert (await api.inject(osvi_session_id, {"context": "x"})).status == 404
    assert (await api.support(osvi_session_id, {"command": "end"})).status == 404
    assert osvi_emulator.applied(osvi_session_id) == ()


async def test_takeover_then_end_switches_the_mode(api: Api, osvi_emulator: OsviEmulator) -> None:
    """takeover hands the session to a human, tell is refused meanwhile, end gives it back."""
    session_id = osvi_emulator.create_session(agent_uuid="agent_A", customer_id="cust")
    lookup = {"customer_id": "cust", "agent_uuid": "agent_A"}
    takeover = await api.support(session_id, {"command": "takeover", "message": "Joining."})
    during = (await api.active(lookup)).json["data"]
    refused = await api.support(session_id, {"command": "tell", "message": "Offer a callback."})
    end = await api.support(session_id, {"command": "end"})
    after = (await api.active(lookup)).json["data"]
    assert takeover.status == 200
    assert takeover.json["data"]["command"] == "takeover"
    assert takeover.json["data"]["active_human"] == during["active_human"] is not None
    assert during["mode"] == "support"
    assert refused.status == 502
    assert refused.json["upstream_body"] == {
        "state": "rejected",
        "reason": "tell_not_allowed_during_takeover",
    }
    assert (end.status, end.json["data"]["command"]) == (200, "end")
    assert (after["mode"], after["active_human"]) == ("ai", None)


async def test_tell_whisper_and_plain_messages(api: Api, osvi_session_id: str) -> None:
    """tell replies, whisper is accepted, a plain message needs a takeover first."""
    tell = await api.support(osvi_session_id, {"command": "tell", "message": "Be brief."})
    whisper = await api.support(osvi_session_id, {"command": "whisper", "message": "VIP."})
    plain = await api.support(osvi_session_id, {"message": "Hi, this is Sam."})
    assert (tell.status, isinstance(tell.json["data"]["reply"], str)) == (200, True)
    assert (whisper.status, whisper.json["data"]["command"]) == (200, "whisper")
    assert (plain.status, plain.json["upstream_body"]["state"]) == (502, "rejected")
    await api.support(osvi_session_id, {"command": "takeover"})
    plain_in_takeover = await api.support(osvi_session_id, {"message": "Hi, this is Sam."})
    assert plain_in_takeover.status == 200
    assert plain_in_takeover.json["data"]["command"] is None


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"command": "dance"}, ["command must be one of: takeover, tell, whisper, end, close"]),
        ({"command": "tell"}, ["message is required"]),
        ({}, ["message is required"]),
        ({"command": "takeover", "message": 3}, ["message must be a string"]),
    ],
)
async def test_support_validates_its_body(
    api: Api, osvi_session_id: str, body: dict[str, object], errors: list[str]
) -> None:
    """A support body that breaks SupportRequest answers 422 with the problem named."""
    reply = await api.support(osvi_session_id, body)
    assert (reply.status, reply.json) == (422, {"success": False, "errors": errors})


async def test_support_on_unknown_session_is_not_found(api: Api) -> None:
    """Support commands on an unknown session answer 404 session_not_found."""
    reply = await api.support(str(uuid.uuid4()), {"command": "close"})
    assert (reply.status, reply.json) == (404, NOT_FOUND)


# --- Lifecycle ------------------------------------------------------------------------------


async def test_lifecycle_rules() -> None:
    """base_url needs a running emulator; an emulator starts once; stop is idempotent."""
    emulator = OsviEmulator()
    with pytest.raises(RuntimeError, match="not running"):
        _ = emulator.base_url
    await emulator.start()
    try:
        assert emulator.base_url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError, match="only once"):
            await emulator.start()
    finally:
        await emulator.stop()
    await emulator.stop()
    with pytest.raises(RuntimeError, match="only once"):
        await emulator.start()
