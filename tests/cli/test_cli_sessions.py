"""`osvi-async session`, `message send`, `support` and `inject --customer`, run as real
processes against the emulator: what each prints, its exit code, and what the server saw."""

from __future__ import annotations

import json
import socket

import pytest

from osvi_async.testing import OsviEmulator
from tests.cli.test_cli import Completed, assert_clean, osvi

AGENT = "agent_sales"
OTHER_AGENT = "agent_billing"
CUSTOMER = "customer_42"


def assert_one_line(result: Completed, code: int, *words: str) -> str:
    """Exit `code`, one `error: ` line on stderr naming `words`, nothing on stdout."""
    assert result.code == code, result.err
    [line] = result.err.strip().splitlines()
    assert line.startswith("error: ")
    for word in words:
        assert word in line
    assert result.out == ""
    assert "Traceback" not in result.err
    return line


async def test_session_create_prints_the_session(osvi_emulator: OsviEmulator) -> None:
    """create with input fields and context: one create request; --json has the new session."""
    result = await osvi(
        "session", "create", "--agent", AGENT, "--customer", CUSTOMER,
        "--input-field", "name=Ada", "--input-field", "plan=pro=yearly",
        "--context", "first", "--context", "second", "--json",
        emulator=osvi_emulator,
    )  # fmt: skip
    assert result.code == 0, result.err
    shown = json.loads(result.out)
    assert shown["customer_id"] == CUSTOMER
    assert shown["status"] == "active"
    assert shown["metadata"]["input_fields"] == {"name": "Ada", "plan": "pro=yearly"}
    assert shown["metadata"]["context"] == ["first", "second"]
    assert osvi_emulator.bucket(shown["id"]) == ("first", "second")
    assert osvi_emulator.requests("create_session") == 1
    assert_clean(result, osvi_emulator.api_token)


async def test_session_get_shows_one_or_every_active_session(osvi_emulator: OsviEmulator) -> None:
    """With --agent: that session; without: every agent's, keyed by agent uuid (and as lines)."""
    sales = osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER, context=["s"])
    billing = osvi_emulator.create_session(agent_uuid=OTHER_AGENT, customer_id=CUSTOMER)
    one = await osvi(
        "session", "get", "--customer", CUSTOMER, "--agent", AGENT, "--json",
        emulator=osvi_emulator,
    )  # fmt: skip
    assert one.code == 0, one.err
    assert json.loads(one.out)["id"] == sales
    every = await osvi("session", "get", "--customer", CUSTOMER, "--json", emulator=osvi_emulator)
    assert every.code == 0, every.err
    shown = json.loads(every.out)
    assert shown["customer_id"] == CUSTOMER
    assert {agent: s["id"] for agent, s in shown["sessions"].items()} == {
        AGENT: sales,
        OTHER_AGENT: billing,
    }
    lines = await osvi("session", "get", "--customer", CUSTOMER, emulator=osvi_emulator)
    assert lines.code == 0, lines.err
    assert f"session:     {sales}" in lines.out.splitlines()
    assert f"agent:       {OTHER_AGENT}" in lines.out.splitlines()
    assert "context:     1. s" in lines.out.splitlines()
    assert osvi_emulator.requests("active_session") == 3


async def test_session_get_with_none_active_exits_4(osvi_emulator: OsviEmulator) -> None:
    """No active session (404 with --agent, {} without): exit 4, one line, nothing on stdout."""
    osvi_emulator.create_session(agent_uuid=OTHER_AGENT, customer_id=CUSTOMER)
    with_agent = await osvi(
        "session", "get", "--customer", CUSTOMER, "--agent", AGENT, emulator=osvi_emulator
    )
    assert_one_line(with_agent, 4, "no active session", CUSTOMER, AGENT)
    without = await osvi("session", "get", "--customer", "nobody", "--json", emulator=osvi_emulator)
    assert_one_line(without, 4, "no active session", "nobody")
    assert_clean(without, osvi_emulator.api_token)


async def test_session_close_then_close_again(osvi_emulator: OsviEmulator) -> None:
    """close: the session is closed (a lookup then exits 4); closing it again: exit 1, one line."""
    session = osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
    closed = await osvi("session", "close", session, emulator=osvi_emulator)
    assert closed.code == 0, closed.err
    assert closed.out.startswith(f"closed session {session}")
    lookup = await osvi(
        "session", "get", "--customer", CUSTOMER, "--agent", AGENT, emulator=osvi_emulator
    )
    assert lookup.code == 4
    again = await osvi("session", "close", session, "--json", emulator=osvi_emulator)
    assert_one_line(again, 1, "session_not_found")
    assert_clean(again, osvi_emulator.api_token)


async def test_message_send_prints_the_agent_reply(osvi_emulator: OsviEmulator) -> None:
    """send: the reply first, then the session; the transcript holds the turn once."""
    result = await osvi(
        "message", "send", "--agent", AGENT, "--customer", CUSTOMER, "Where is my order?",
        emulator=osvi_emulator,
    )  # fmt: skip
    assert result.code == 0, result.err
    reply, details = result.out.splitlines()
    assert reply == "Emulated agent reply to: Where is my order?"
    session = details.removeprefix("(session ").split(",")[0]
    assert osvi_emulator.messages(session) == [
        ("customer", "Where is my order?"),
        ("agent", reply),
    ]
    again = await osvi(
        "message", "send", "--agent", AGENT, "--customer", CUSTOMER,
        "--session-id", session, "--json", "I want a human",
        emulator=osvi_emulator,
    )  # fmt: skip
    assert again.code == 0, again.err
    shown = json.loads(again.out)
    assert (shown["session_id"], shown["help_requested"]) == (session, True)
    assert osvi_emulator.requests("inbound") == 2
    assert_clean(again, osvi_emulator.api_token)


@pytest.mark.parametrize(
    ("args", "endpoint"),
    [
        (["session", "create", "--agent", AGENT, "--customer", CUSTOMER], "create_session"),
        (["message", "send", "--agent", AGENT, "--customer", CUSTOMER, "hello"], "inbound"),
    ],
)
async def test_a_maybe_applied_create_or_send_is_not_retried(
    osvi_emulator: OsviEmulator, args: list[str], endpoint: str
) -> None:
    """Applied, then a 502: exit 1, one line saying it may have been applied; one request."""
    osvi_emulator.fault_plan.script_endpoint(endpoint, ["ambiguous_502"])
    result = await osvi(*args, emulator=osvi_emulator)
    line = assert_one_line(result, 1)
    assert "; may have been applied; to check: " in line
    assert line.endswith(f"to check: osvi-async session get --customer {CUSTOMER} --agent {AGENT}")
    assert osvi_emulator.requests(endpoint) == 1
    assert_clean(result, osvi_emulator.api_token)


async def test_support_commands_and_their_refusals(osvi_emulator: OsviEmulator) -> None:
    """takeover, operator message, whisper, end; tell during takeover is refused (exit 1)."""
    session = osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
    takeover = await osvi("support", session, "takeover", "--json", emulator=osvi_emulator)
    assert takeover.code == 0, takeover.err
    shown = json.loads(takeover.out)
    assert (shown["session_id"], shown["command"], shown["state"]) == (session, "takeover", "ok")
    assert shown["active_human"] is not None
    tell = await osvi("support", session, "tell", "--message", "hi", emulator=osvi_emulator)
    assert_one_line(tell, 1, "tell_not_allowed_during_takeover")
    plain = await osvi("support", session, "--message", "Operator here", emulator=osvi_emulator)
    assert plain.code == 0, plain.err
    assert plain.out.splitlines()[0] == f"message: ok (session {session})"
    whisper = await osvi("support", session, "whisper", "--message", "vip", emulator=osvi_emulator)
    assert whisper.code == 0, whisper.err
    end = await osvi("support", session, "end", emulator=osvi_emulator)
    assert end.code == 0, end.err
    roles = [role for role, _ in osvi_emulator.messages(session)]
    assert roles == ["operator", "whisper"]
    assert_clean(end, osvi_emulator.api_token)


async def test_inject_by_customer_and_agent(osvi_emulator: OsviEmulator) -> None:
    """inject --customer --agent: the entry lands in that pair's active session; none: exit 4."""
    session = osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
    result = await osvi(
        "inject", "--customer", CUSTOMER, "--agent", AGENT, "--json", "call ended",
        emulator=osvi_emulator,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(result.out) == {
        "session_id": session,
        "customer_id": CUSTOMER,
        "agent_uuid": AGENT,
        "context": ["call ended"],
    }
    assert osvi_emulator.applied(session) == ("call ended",)
    none = await osvi(
        "inject", "--customer", "nobody", "--agent", AGENT, "x", emulator=osvi_emulator
    )
    assert_one_line(none, 4, "no active session")
    assert_clean(none, osvi_emulator.api_token)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["inject", "--customer", "C", "x"], "--customer and --agent go together"),
        (["inject", "--agent", "A", "x"], "--customer and --agent go together"),
        (
            [
                "inject",
                "--customer",
                "C",
                "--agent",
                "A",
                "4718a326-417b-4dda-90d0-21fd65a11cb8",
                "x",
            ],
            "not both",
        ),
        (["inject", "--customer", "C", "--agent", "A"], "Missing argument 'TEXT'"),
        (["inject"], "Missing argument 'SESSION_ID'"),
        (["inject", "--customer", " ", "--agent", "A", "x"], "must not be blank"),
        (["session", "create", "--customer", "C"], "Missing option '--agent'"),
        (["session", "create", "--agent", "", "--customer", "C"], "must not be blank"),
        (
            ["session", "create", "--agent", "A", "--customer", "C", "--input-field", "x"],
            "KEY=VALUE",
        ),
        (
            [
                "session",
                "create",
                "--agent",
                "A",
                "--customer",
                "C",
                "--input-field",
                "k=1",
                "--input-field",
                "k=2",
            ],
            "given twice",
        ),
        (["session", "get", "--customer", "\t"], "must not be blank"),
        (["session", "close", " "], "must not be blank"),
        (["message", "send", "--agent", "A", "--customer", "C", "  "], "must not be blank"),
        (["message", "send", "--agent", "A", "--customer", "C"], "Missing argument 'TEXT'"),
        (["support", "4718a326-417b-4dda-90d0-21fd65a11cb8", "tell"], "--message is required"),
        (["support", "4718a326-417b-4dda-90d0-21fd65a11cb8"], "--message is required"),
        (["support", "4718a326-417b-4dda-90d0-21fd65a11cb8", "shout"], "'shout' is not one of"),
    ],
)
async def test_bad_arguments_are_one_line_usage_errors(
    osvi_emulator: OsviEmulator, args: list[str], words: str
) -> None:
    """Bad or blank arguments: exit 2, one line naming the problem, nothing reaches the server."""
    result = await osvi(*args, emulator=osvi_emulator)
    assert_one_line(result, 2, words)
    assert osvi_emulator.stats.requests_total == 0
    assert_clean(result, osvi_emulator.api_token)


async def test_an_engine_refusal_is_exit_1(osvi_emulator: OsviEmulator) -> None:
    """An engine refusal of a support command: exit 1, one line naming its code, one request."""
    session = osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
    osvi_emulator.fault_plan.script_endpoint("support", ["engine_rejected"])
    result = await osvi("support", session, "whisper", "--message", "x", emulator=osvi_emulator)
    assert_one_line(result, 1)
    assert osvi_emulator.requests("support") == 1
    assert osvi_emulator.messages(session) == []
    assert_clean(result, osvi_emulator.api_token)


async def test_a_lookup_is_retried_through_a_transient_failure(osvi_emulator: OsviEmulator) -> None:
    """session get is a read: an engine 502 is retried, exit 0; the server saw two requests."""
    session = osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
    osvi_emulator.fault_plan.script_endpoint("active_session", ["engine_error"])
    result = await osvi(
        "session", "get", "--customer", CUSTOMER, "--agent", AGENT, "--json",
        emulator=osvi_emulator,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(result.out)["id"] == session
    assert osvi_emulator.requests("active_session") == 2


async def test_unreachable_api_exits_3() -> None:
    """Nothing listening: session get and message send exit 3, one line, no token."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    where = ["--token", "0123456789abcdef", "--base-url", f"http://127.0.0.1:{port}"]
    for args in (
        ["session", "get", "--customer", CUSTOMER],
        ["message", "send", "--agent", AGENT, "--customer", CUSTOMER, "hi"],
    ):
        result = await osvi(*args, *where, "--timeout", "2")
        line = assert_one_line(result, 3, "APIConnectionError")
        assert "0123456789abcdef" not in line


async def test_support_help_says_which_message_the_customer_sees() -> None:
    """support --help: a message with takeover/end/close is shown to the customer (at most
    once); whisper's is the private note."""
    result = await osvi("support", "--help")
    assert result.code == 0, result.err
    text = " ".join(result.out.split())
    assert "With takeover, end or close it is optional and is SHOWN TO THE CUSTOMER" in text
    assert "sent at most once" in text
    assert "whisper --message is a private note only the agent sees" in text
