"""What the command line writes: server text escaped for a terminal, values never rewritten,
stdout failures and unexpected errors as one line. Real processes against the emulator."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from osvi_async.testing import OsviEmulator
from tests.cli.test_cli import Completed, assert_clean, osvi

AGENT = "agent_sales"
CUSTOMER = "customer_42"
HOSTILE = "ok\x1b[31mred\r\n2. forged\x9b2J\x07\u202eevil"
"""Server text a terminal would act on: ESC, CR/LF, 8-bit CSI, BEL, a bidi override."""
SHOWN = "ok\\x1b[31mred\\r\\n2. forged\\x9b2J\\x07\\u202eevil"
RAW = ("\x1b", "\r", "\x9b", "\x07", "\u202e")


def _env(emulator: OsviEmulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSVI_")}
    return env | {"OSVI_API_TOKEN": emulator.api_token, "OSVI_BASE_URL": emulator.base_url}


async def _run(
    emulator: OsviEmulator, *args: str, stdout: int, prefix: tuple[str, ...] = ()
) -> tuple[int, str]:
    """Run the CLI with stdout on `stdout` (an fd); returns (exit code, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "osvi_async.cli", *args,
        env=_env(emulator),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_server_text_is_escaped_for_a_person_and_exact_in_json(
    osvi_emulator: OsviEmulator,
) -> None:
    """A context and a reply holding ESC, CR/LF, C1, BEL and a bidi override: shown as
    escapes on one line each (no raw byte reaches stdout); --json reads back the exact text."""
    session = osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
    osvi_emulator.agent_reply = lambda session_id, content: HOSTILE
    lines = await osvi("inject", session, HOSTILE, emulator=osvi_emulator)
    assert lines.code == 0, lines.err
    assert lines.out.splitlines() == [f"1. {SHOWN}"]
    get = await osvi(
        "session", "get", "--customer", CUSTOMER, "--agent", AGENT, emulator=osvi_emulator
    )
    assert f"context:     1. {SHOWN}" in get.out.splitlines()
    send = await osvi(
        "message", "send", "--agent", AGENT, "--customer", CUSTOMER, "hi", emulator=osvi_emulator
    )
    assert send.out.splitlines()[0] == SHOWN
    as_json = await osvi(
        "session", "get", "--customer", CUSTOMER, "--agent", AGENT, "--json",
        emulator=osvi_emulator,
    )  # fmt: skip
    assert json.loads(as_json.out)["metadata"]["context"] == [HOSTILE]
    inject_json = await osvi("inject", "--json", session, "x", emulator=osvi_emulator)
    assert json.loads(inject_json.out)["context"] == [HOSTILE, "x"]
    for result in (lines, get, send, as_json, inject_json):
        assert not any(char in result.out for char in RAW), result.out
        assert_clean(result, osvi_emulator.api_token)


async def test_error_lines_keep_values_exactly(osvi_emulator: OsviEmulator) -> None:
    """Ids keep their spaces in error lines: inner runs of spaces (exit 4) and outer ones,
    which the client refuses before sending (exit 2)."""
    inner = await osvi(
        "session", "get", "--customer", "cus  5", "--agent", AGENT, emulator=osvi_emulator
    )
    assert inner.code == 4, inner.err
    assert "customer cus  5 has none" in inner.err
    padded = await osvi("session", "get", "--customer", " cus5 ", emulator=osvi_emulator)
    assert padded.code == 2, padded.err
    assert "' cus5 '" in padded.err
    assert osvi_emulator.requests("active_session") == 1
    for result in (inner, padded):
        assert len(result.err.splitlines()) == 1
        assert_clean(result, osvi_emulator.api_token)


async def test_a_full_disk_on_stdout_is_one_line(osvi_emulator: OsviEmulator) -> None:
    """stdout on /dev/full (ENOSPC): exit 1, `error: cannot write output: ...`, no traceback."""
    osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        for args in (["session", "get", "--customer", CUSTOMER], ["--help"]):
            code, err = await _run(osvi_emulator, *args, stdout=full)
            assert code == 1, err
            assert err.splitlines() == ["error: cannot write output: No space left on device"]
    finally:
        os.close(full)


async def test_a_full_disk_after_an_inject_says_the_inject_went_through(
    osvi_emulator: OsviEmulator,
) -> None:
    """The entry was appended before printing failed: the line says so, so that a script
    retrying on exit 1 knows not to send it again."""
    session = osvi_emulator.create_session()
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        code, err = await _run(osvi_emulator, "inject", session, "once", stdout=full)
    finally:
        os.close(full)
    assert code == 1, err
    assert err.splitlines() == [
        "error: cannot write output: No space left on device; the request itself went through"
    ]
    assert osvi_emulator.applied(session) == ("once",)


async def test_a_closed_stdout_is_refused_before_sending(osvi_emulator: OsviEmulator) -> None:
    """stdout closed (`>&-`): exit 1, one line, and the inject is not sent at all."""
    session = osvi_emulator.create_session()
    code, err = await _run(
        osvi_emulator, "inject", session, "x",
        stdout=asyncio.subprocess.DEVNULL,
        prefix=("sh", "-c", 'exec "$@" >&-', "sh"),
    )  # fmt: skip
    assert code == 1, err
    assert err.splitlines() == ["error: cannot write output: stdout is closed"]
    assert osvi_emulator.stats.requests_total == 0


async def test_a_reader_that_went_away_ends_quietly(osvi_emulator: OsviEmulator) -> None:
    """stdout a pipe nobody reads any more (EPIPE, as `| head -c1`): exit 1, nothing on stderr."""
    osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        code, err = await _run(
            osvi_emulator, "session", "get", "--customer", CUSTOMER, stdout=write_end
        )
    finally:
        os.close(write_end)
    assert (code, err) == (1, "")


WRAPPER = """
import os, sys
import osvi_async.cli._sessions as sessions
from osvi_async.cli import main

def broken(*args, **kwargs):
    raise RuntimeError(f"boom {os.environ['OSVI_API_TOKEN']}\\nsecond line")

sessions.session_lines = broken
sys.argv[0] = "osvi-async"
main()
"""


async def test_an_unexpected_exception_is_one_line_with_the_token_redacted(
    osvi_emulator: OsviEmulator,
) -> None:
    """A bug in the command (a function patched to raise): exit 1, `error: internal error:
    RuntimeError: ...` on one line, the token redacted, no traceback."""
    osvi_emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRAPPER, "session", "get", "--customer", CUSTOMER,
        env=_env(osvi_emulator),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    result = Completed(process.returncode or 0, out.decode(), err.decode())
    assert result.code == 1, result.err
    assert result.err.splitlines() == [
        "error: internal error: RuntimeError: boom [REDACTED]\\nsecond line"
    ]
    assert_clean(result, osvi_emulator.api_token)


@pytest.mark.parametrize("base_url", ["", "--flag"], ids=["env", "option"])
async def test_an_empty_base_url_is_refused(osvi_emulator: OsviEmulator, base_url: str) -> None:
    """OSVI_BASE_URL set but empty, like --base-url '': exit 2, one line, nothing sent."""
    env = _env(osvi_emulator) | {"OSVI_BASE_URL": ""}
    option = ["--base-url", ""] if base_url else []
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "osvi_async.cli", "session", "get", "--customer", CUSTOMER, *option,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2, err
    [line] = err.decode().splitlines()
    assert line.startswith("error: ")
    assert ("OSVI_BASE_URL is set but empty" in line) == (not base_url)
    assert out == b""
    assert osvi_emulator.stats.requests_total == 0
