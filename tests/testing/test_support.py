"""POST /v1/chat/session/{id}/support: each command's effect, answer and transcript lines."""

from __future__ import annotations

import pytest

from osvi_async.testing import FaultPlan, OsviEmulator
from tests.testing.helpers import AGENT, Api

OPERATOR = "operator@emulator.invalid"
NOT_FOUND = {"success": False, "error": "session_not_found"}


@pytest.fixture
def session_id(osvi_emulator: OsviEmulator) -> str:
    """An open session of customer "cust" with the docs' example agent."""
    return osvi_emulator.create_session(agent_uuid=AGENT, customer_id="cust")


async def _record(api: Api) -> dict[str, object]:
    """The session record the active lookup answers for ("cust", AGENT)."""
    data: dict[str, object] = (await api.active({"customer_id": "cust", "agent_uuid": AGENT})).json[
        "data"
    ]
    return data


def _rejected(session_id: str, reason: str) -> dict[str, object]:
    """The 502 body of a support command the chat engine refused."""
    return {
        "success": False,
        "error": f"Python engine returned 422 for POST /v1/chat/session/{session_id}/support",
        "upstream_body": {"state": "rejected", "reason": reason},
    }


async def test_takeover_hands_the_session_to_an_operator(
    api: Api, osvi_emulator: OsviEmulator, session_id: str
) -> None:
    """takeover: mode support, active_human set, its message shown to the customer."""
    reply = await api.support(session_id, {"command": "takeover", "message": "Sam joins."})
    record = await _record(api)
    assert (reply.status, reply.json["data"]) == (
        200,
        {"state": "ok", "session_id": session_id, "command": "takeover", "active_human": OPERATOR},
    )
    assert (record["mode"], record["active_human"]) == ("support", OPERATOR)
    assert osvi_emulator.messages(session_id) == [("operator", "Sam joins.")]


async def test_end_gives_the_session_back_to_the_agent(
    api: Api, osvi_emulator: OsviEmulator, session_id: str
) -> None:
    """end: mode ai and no active_human again; the answer carries no reply or operator."""
    await api.support(session_id, {"command": "takeover"})
    reply = await api.support(session_id, {"command": "end"})
    record = await _record(api)
    assert reply.json == {
        "success": True,
        "data": {"state": "ok", "session_id": session_id, "command": "end"},
    }
    assert (record["mode"], record["active_human"]) == ("ai", None)
    assert osvi_emulator.messages(session_id) == []


async def test_close_ends_the_session_for_every_endpoint(
    api: Api, osvi_emulator: OsviEmulator, session_id: str
) -> None:
    """After close every request naming the session is 404; the next message opens a new one."""
    closed = await api.support(session_id, {"command": "close", "message": "Bye."})
    explicit = {"agent_uuid": AGENT, "customer_id": "cust", "content": "hi"}
    after = [
        await api.support(session_id, {"command": "end"}),
        await api.inject(session_id, {"context": "x"}),
        await api.inbound({**explicit, "session_id": session_id}),
        await api.active({"customer_id": "cust", "agent_uuid": AGENT}),
    ]
    fresh = await api.say("cust", "hi")
    assert closed.json["data"] == {"state": "ok", "session_id": session_id, "command": "close"}
    assert [(reply.status, reply.json) for reply in after] == [(404, NOT_FOUND)] * 4
    assert fresh.json["data"]["session_id"] != session_id
    assert osvi_emulator.messages(session_id) == [("operator", "Bye.")]


async def test_whisper_is_kept_from_the_customer(
    api: Api, osvi_emulator: OsviEmulator, session_id: str
) -> None:
    """whisper is stored as role whisper and appears in no answer the customer's side reads."""
    reply = await api.support(session_id, {"command": "whisper", "message": "VIP, be generous."})
    turn = await api.say("cust", "Hello")
    record = await api.active({"customer_id": "cust", "agent_uuid": AGENT})
    assert reply.json["data"] == {"state": "ok", "session_id": session_id, "command": "whisper"}
    assert osvi_emulator.messages(session_id)[0] == ("whisper", "VIP, be generous.")
    assert "VIP" not in turn.text
    assert "VIP" not in record.text


async def test_tell_runs_an_agent_turn(
    api: Api, osvi_emulator: OsviEmulator, session_id: str
) -> None:
    """tell records its guidance as a whisper and returns the agent's reply to it."""
    osvi_emulator.agent_reply = lambda sid, content: f"[{sid == session_id}] {content}"
    reply = await api.support(session_id, {"command": "tell", "message": "Offer a callback."})
    assert reply.json["data"] == {
        "state": "ok",
        "session_id": session_id,
        "command": "tell",
        "reply": "[True] Offer a callback.",
    }
    assert osvi_emulator.messages(session_id) == [
        ("whisper", "Offer a callback."),
        ("agent", "[True] Offer a callback."),
    ]


async def test_tell_is_refused_during_a_takeover(
    api: Api, osvi_emulator: OsviEmulator, session_id: str
) -> None:
    """tell during a takeover is the engine's 502 rejection; nothing is recorded."""
    await api.support(session_id, {"command": "takeover"})
    reply = await api.support(session_id, {"command": "tell", "message": "Offer a callback."})
    assert (reply.status, reply.json) == (
        502,
        _rejected(session_id, "tell_not_allowed_during_takeover"),
    )
    assert osvi_emulator.messages(session_id) == []


async def test_a_plain_message_needs_support_mode(
    api: Api, osvi_emulator: OsviEmulator, session_id: str
) -> None:
    """A plain operator message is refused in AI mode and recorded as operator in support mode."""
    refused = await api.support(session_id, {"message": "Hi, this is Sam."})
    await api.support(session_id, {"command": "takeover"})
    accepted = await api.support(session_id, {"message": "Hi, this is Sam."})
    assert (refused.status, refused.json) == (
        502,
        _rejected(session_id, "plain_message_requires_support_mode"),
    )
    assert accepted.json["data"] == {"state": "ok", "session_id": session_id, "command": None}
    assert osvi_emulator.messages(session_id) == [("operator", "Hi, this is Sam.")]


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"command": "dance"}, ["command must be one of: takeover, tell, whisper, end, close"]),
        (
            {"command": 5, "message": "x"},
            ["command must be one of: takeover, tell, whisper, end, close"],
        ),
        ({"command": "tell", "message": "  "}, ["message is required"]),
        ({"message": ""}, ["message is required"]),
    ],
)
async def test_bad_commands_and_missing_messages_are_422(
    api: Api,
    osvi_emulator: OsviEmulator,
    session_id: str,
    body: dict[str, object],
    errors: list[str],
) -> None:
    """An unknown command or a blank required message is a 422 listing it; nothing changes."""
    reply = await api.support(session_id, body)
    assert (reply.status, reply.json) == (422, {"success": False, "errors": errors})
    assert ((await _record(api))["mode"], osvi_emulator.messages(session_id)) == ("ai", [])


async def test_engine_faults_come_before_the_engines_own_refusal(
    api: Api, osvi_emulator: OsviEmulator, session_id: str
) -> None:
    """An unreachable engine answers 502 with no upstream body even where it would refuse."""
    osvi_emulator.fault_plan = FaultPlan(endpoints={"support"}, engine_error=1.0)
    reply = await api.support(session_id, {"message": "Hi, this is Sam."})
    assert (reply.status, reply.json["upstream_body"]) == (502, None)
    assert reply.json["error"] == "Python engine unreachable"
