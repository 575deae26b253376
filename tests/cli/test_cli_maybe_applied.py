"""A state-changing command whose request may have been applied says so, and how to check:
after a failure (every command, whatever its exit code) and after a stop signal while the
request was in flight. Real processes against the emulator."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from osvi_async.testing import OsviEmulator
from tests.chaos._harness import wait_until
from tests.cli.test_cli import Completed, assert_clean, osvi

AGENT = "agent_sales"
CUSTOMER = "customer_42"
BY_CUSTOMER = f"to check: osvi-async session get --customer {CUSTOMER} --agent {AGENT}"


def by_session(session: str) -> str:
    """The check a line names for a command addressed by session id."""
    return (
        f"to check: osvi-async session get --customer C --agent A with session {session}'s "
        "customer and agent (the API has no lookup by session id)"
    )


def one_line(result: Completed, code: int) -> str:
    """Exit `code`, one `error: ` line on stderr and nothing on stdout; returns the line."""
    assert result.code == code, result.err
    [line] = result.err.strip().splitlines()
    assert line.startswith("error: ")
    assert result.out == ""
    return line


@pytest.mark.parametrize("by_customer", [False, True], ids=["by-session", "by-customer"])
async def test_inject_applied_on_every_dropped_attempt_says_so(
    osvi_emulator: OsviEmulator, by_customer: bool
) -> None:
    """Four applied-then-dropped attempts: four entries landed; the line says possibly more
    than once and names the check for its form; exit 3."""
    session = osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
    osvi_emulator.fault_plan.script_endpoint("inject_context", ["ambiguous_drop"] * 4)
    address = ["--customer", CUSTOMER, "--agent", AGENT] if by_customer else [session]
    result = await osvi("inject", *address, "call ended", emulator=osvi_emulator)
    line = one_line(result, 3)
    assert osvi_emulator.applied(session) == ("call ended",) * 4
    assert "may have been applied, possibly more than once (4 attempts)" in line
    assert line.endswith(BY_CUSTOMER if by_customer else by_session(session))
    assert_clean(result, osvi_emulator.api_token)


@pytest.mark.parametrize(
    ("args", "endpoint", "check"),
    [
        (["session", "create", "--agent", AGENT, "--customer", CUSTOMER], "create_session", None),
        (["message", "send", "--agent", AGENT, "--customer", CUSTOMER, "hi"], "inbound", None),
        (["support", "{s}", "tell", "--message", "hi"], "support", "session"),
        (["support", "{s}", "takeover", "--message", "hi"], "support", "session"),
        (["support", "{s}", "close"], "support", "session"),
    ],
    ids=["create", "send", "tell", "takeover-message", "close"],
)
async def test_every_command_says_a_failure_may_have_been_applied(
    osvi_emulator: OsviEmulator, args: list[str], endpoint: str, check: str | None
) -> None:
    """Applied, then a 502 (at most once calls) or dropped (close, retried like a read): one
    line saying it may have been applied and naming the check."""
    session = osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
    fault = "ambiguous_drop" if args[-1] == "close" else "ambiguous_502"
    osvi_emulator.fault_plan.script_endpoint(endpoint, [fault])
    result = await osvi(*[a.format(s=session) for a in args], emulator=osvi_emulator)
    assert result.code in (1, 3), result.err
    line = one_line(result, result.code)
    assert "; may have been applied; to check: " in line
    assert line.endswith(by_session(session) if check else BY_CUSTOMER)
    assert_clean(result, osvi_emulator.api_token)


async def start(emulator: OsviEmulator, *args: str) -> asyncio.subprocess.Process:
    """Start `python -m osvi_async.cli ARGS` against the emulator, stdout and stderr piped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSVI_", "COVERAGE_"))}
    env |= {"OSVI_API_TOKEN": emulator.api_token, "OSVI_BASE_URL": emulator.base_url}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "osvi_async.cli", *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "endpoint", "check"),
    [
        (["inject", "{s}", "note"], "inject_context", "session"),
        (["inject", "--customer", CUSTOMER, "--agent", AGENT, "note"], "inject_context", None),
        (["message", "send", "--agent", AGENT, "--customer", CUSTOMER, "hi"], "inbound", None),
        (["session", "create", "--agent", AGENT, "--customer", CUSTOMER], "create_session", None),
        (["session", "close", "{s}"], "support", "session"),
        (["support", "{s}", "whisper", "--message", "vip"], "support", "session"),
    ],
    ids=["inject", "inject-by-customer", "send", "create", "close", "support"],
)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_stop_while_a_request_hangs_says_it_may_have_been_applied(
    osvi_emulator: OsviEmulator,
    args: list[str],
    endpoint: str,
    check: str | None,
    signum: int,
) -> None:
    """The server holds the request; a signal: exit 130/143 at once, one line saying the
    request may have been applied and how to check."""
    session = osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
    osvi_emulator.fault_plan.script_endpoint(endpoint, ["hang"])
    process = await start(osvi_emulator, *[a.format(s=session) for a in args])
    assert await wait_until(lambda: osvi_emulator.requests(endpoint) == 1, timeout=30)
    process.send_signal(signum)
    out, err = await asyncio.wait_for(process.communicate(), timeout=10)
    assert process.returncode == 128 + signum
    assert out == b""
    [line] = err.decode().strip().splitlines()
    name = signal.Signals(signum).name
    assert line.startswith(f"error: stopped by {name}; the request was in flight and may have ")
    assert line.endswith(by_session(session) if check else BY_CUSTOMER)
    assert osvi_emulator.requests(endpoint) == 1


async def test_a_stop_during_a_lookup_adds_nothing(osvi_emulator: OsviEmulator) -> None:
    """session get changes nothing: a stop while its request hangs is the plain stop line."""
    osvi_emulator.fault_plan.script_endpoint("active_session", ["hang"])
    process = await start(osvi_emulator, "session", "get", "--customer", CUSTOMER)
    assert await wait_until(lambda: osvi_emulator.requests("active_session") == 1, timeout=30)
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), timeout=10)
    assert process.returncode == 130
    assert err.decode().splitlines() == ["error: stopped by SIGINT"]
