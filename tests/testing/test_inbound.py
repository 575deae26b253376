"""POST /v1/chat/inbound: the customer's session found, resumed or opened; the agent's reply."""

from __future__ import annotations

import uuid

import pytest

from osvi_async.testing import OsviEmulator
from tests.testing.helpers import AGENT, Api, api_for

NOT_FOUND = {"success": False, "error": "session_not_found"}


async def test_a_first_message_opens_a_session_and_gets_the_scripted_reply(
    api: Api, osvi_emulator: OsviEmulator
) -> None:
    """Without a session the message opens one; the reply and transcript are the default ones."""
    reply = await api.say("+15551112222", "Hi, I need help.")
    data = reply.json["data"]
    found = await api.active({"customer_id": "+15551112222", "agent_uuid": AGENT})
    assert reply.status == 200
    assert data == {
        "session_id": found.json["data"]["id"],
        "reply": "Emulated agent reply to: Hi, I need help.",
        "state": "default",
        "mode": "ai",
        "help_requested": False,
    }
    assert osvi_emulator.messages(data["session_id"]) == [
        ("customer", "Hi, I need help."),
        ("agent", "Emulated agent reply to: Hi, I need help."),
    ]


async def test_later_messages_go_to_the_same_session(api: Api, osvi_emulator: OsviEmulator) -> None:
    """A customer's next message lands in the session the first one opened, not a new one."""
    session_id = osvi_emulator.create_session(agent_uuid=AGENT, customer_id="cust")
    first = await api.say("cust", "one")
    second = await api.say("cust", "two")
    other_agent = await api.say("cust", "three", agent_uuid="agent_other")
    assert first.json["data"]["session_id"] == second.json["data"]["session_id"] == session_id
    assert other_agent.json["data"]["session_id"] != session_id
    assert [text for role, text in osvi_emulator.messages(session_id) if role == "customer"] == [
        "one",
        "two",
    ]


async def test_a_dormant_session_is_resumed(api: Api, osvi_emulator: OsviEmulator) -> None:
    """The pair's dormant session stays findable and the next message makes it active again."""
    session_id = osvi_emulator.create_session(agent_uuid=AGENT, customer_id="cust")
    osvi_emulator.make_dormant(session_id)
    lookup = {"customer_id": "cust", "agent_uuid": AGENT}
    before = (await api.active(lookup)).json["data"]
    reply = await api.say("cust", "Back again.")
    after = (await api.active(lookup)).json["data"]
    assert (before["id"], before["status"]) == (session_id, "dormant")
    assert reply.json["data"]["session_id"] == session_id
    assert (after["id"], after["status"]) == (session_id, "active")


def test_only_an_open_session_can_be_made_dormant() -> None:
    """make_dormant refuses unknown and closed sessions."""
    emulator = OsviEmulator()
    session_id = emulator.create_session()
    emulator.close_session(session_id)
    with pytest.raises(ValueError, match="closed"):
        emulator.make_dormant(session_id)
    with pytest.raises(KeyError):
        emulator.make_dormant(str(uuid.uuid4()))


async def test_an_explicit_session_id_routes_the_message_there(
    api: Api, osvi_emulator: OsviEmulator
) -> None:
    """With session_id the message goes to that open session, whoever the body names."""
    session_id = osvi_emulator.create_session(agent_uuid="agent_A", customer_id="someone")
    body = {"agent_uuid": AGENT, "customer_id": "cust", "content": "Hi", "session_id": session_id}
    reply = await api.inbound(body)
    assert (reply.status, reply.json["data"]["session_id"]) == (200, session_id)
    assert osvi_emulator.messages(session_id)[0] == ("customer", "Hi")
    assert (await api.active({"customer_id": "cust"})).json["data"] == {}


@pytest.mark.parametrize("closed", [True, False], ids=["closed", "unknown"])
async def test_an_explicit_session_id_must_be_open(
    api: Api, osvi_emulator: OsviEmulator, closed: bool
) -> None:
    """A closed or unknown session_id answers 404 session_not_found and opens nothing."""
    session_id = osvi_emulator.create_session(agent_uuid=AGENT, customer_id="other")
    if closed:
        osvi_emulator.close_session(session_id)
    else:
        session_id = str(uuid.uuid4())
    body = {"agent_uuid": AGENT, "customer_id": "cust", "content": "Hi", "session_id": session_id}
    reply = await api.inbound(body)
    assert (reply.status, reply.json) == (404, NOT_FOUND)
    assert (await api.active({"customer_id": "cust"})).json["data"] == {}


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, ["agent_uuid is required", "customer_id is required", "content is required"]),
        ({"agent_uuid": AGENT, "customer_id": "c", "content": "  "}, ["content is required"]),
        (
            {"agent_uuid": 1, "customer_id": "c", "content": 2},
            ["agent_uuid must be a string", "content must be a string"],
        ),
        (
            {"agent_uuid": AGENT, "customer_id": "c", "content": "x", "session_id": 7},
            ["session_id must be a string"],
        ),
        (
            {"agent_uuid": AGENT, "customer_id": "c", "content": "x", "session_id": " "},
            ["session_id must not be blank"],
        ),
    ],
)
async def test_a_bad_body_lists_every_problem(
    api: Api, osvi_emulator: OsviEmulator, body: dict[str, object], errors: list[str]
) -> None:
    """A body that breaks SendMessageRequest answers 422 with each problem; nothing is opened."""
    reply = await api.inbound(body)
    assert (reply.status, reply.json) == (422, {"success": False, "errors": errors})
    assert (await api.active({"customer_id": "c"})).json["data"] == {}


async def test_a_body_that_is_not_an_object_is_invalid_json(api: Api) -> None:
    """Unparsable JSON and a JSON array answer 400 invalid_json, as create-session does."""
    broken = await api.inbound(raw=b"{not json")
    array = await api.inbound(["agent_uuid"])
    expected = (400, {"success": False, "error": "invalid_json"})
    assert (broken.status, broken.json) == (array.status, array.json) == expected


async def test_no_token_is_401_and_changes_nothing(api: Api) -> None:
    """Without the token the message is refused before any session is opened."""
    body = {"agent_uuid": AGENT, "customer_id": "cust", "content": "Hi"}
    reply = await api.inbound(body, token=None)
    assert (reply.status, reply.json) == (401, {"success": False, "error": "unauthorized"})
    assert (await api.active({"customer_id": "cust"})).json["data"] == {}


async def test_the_agent_reply_can_be_given_when_built() -> None:
    """OsviEmulator(agent_reply=...) answers with the test author's callable."""
    seen: list[tuple[str, str]] = []

    def reply(session_id: str, content: str) -> str:
        seen.append((session_id, content))
        return content.upper()

    async with OsviEmulator(agent_reply=reply) as emulator:
        session_id = emulator.create_session(agent_uuid=AGENT, customer_id="cust")
        async with api_for(emulator) as api:
            answer = await api.say("cust", "hello")
    assert answer.json["data"]["reply"] == "HELLO"
    assert seen == [(session_id, "hello")]
    assert emulator.messages(session_id) == [("customer", "hello"), ("agent", "HELLO")]


async def test_the_agent_reply_can_be_swapped_while_running(
    api: Api, osvi_emulator: OsviEmulator
) -> None:
    """Assigning emulator.agent_reply changes the next reply, default first."""
    first = await api.say("cust", "a")
    osvi_emulator.agent_reply = lambda session_id, content: f"{session_id[:8]}:{content}"
    second = await api.say("cust", "b")
    session_id = second.json["data"]["session_id"]
    assert first.json["data"]["reply"] == "Emulated agent reply to: a"
    assert second.json["data"]["reply"] == f"{session_id[:8]}:b"


async def test_no_auto_reply_in_support_mode(api: Api, osvi_emulator: OsviEmulator) -> None:
    """During a takeover the agent stays silent (reply ""), and answers again after end."""
    session_id = osvi_emulator.create_session(agent_uuid=AGENT, customer_id="cust")
    await api.support(session_id, {"command": "takeover"})
    during = await api.say("cust", "Anyone there?")
    await api.support(session_id, {"command": "end"})
    after = await api.say("cust", "Thanks.")
    assert (during.json["data"]["reply"], during.json["data"]["mode"]) == ("", "support")
    assert (after.json["data"]["reply"], after.json["data"]["mode"]) == (
        "Emulated agent reply to: Thanks.",
        "ai",
    )
    assert osvi_emulator.messages(session_id) == [
        ("customer", "Anyone there?"),
        ("customer", "Thanks."),
        ("agent", "Emulated agent reply to: Thanks."),
    ]


@pytest.mark.parametrize(
    ("content", "asked"),
    [
        ("Can I talk to a human?", True),
        ("REPRESENTATIVE please", True),
        ("I want a real person.", True),
        ("Put me through to one of your agents", True),
        ("operator!", True),
        ("Humanity is great and personal", False),
        ("Where is my parcel?", False),
    ],
)
async def test_help_requested_when_the_customer_asks_for_a_human(
    api: Api, content: str, asked: bool
) -> None:
    """The words human, person, operator, agent, representative (any case, plural) ask for help."""
    reply = await api.say("cust", content)
    assert reply.json["data"]["help_requested"] is asked


async def test_help_requested_stays_set_on_the_session(api: Api) -> None:
    """Once asked, help_requested stays true in later replies and in the session record."""
    await api.say("cust", "human please")
    later = await api.say("cust", "ok thanks")
    record = await api.active({"customer_id": "cust", "agent_uuid": AGENT})
    assert later.json["data"]["help_requested"] is True
    assert record.json["data"]["help_requested"] is True
