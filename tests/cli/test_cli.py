"""The `osvi-async` command line, run as a real process against the emulator."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import attrs

from osvi_async.testing import OsviEmulator


@attrs.frozen
class Completed:
    """A finished command: exit code and decoded output."""

    code: int
    out: str
    err: str


async def osvi(
    *args: str, emulator: OsviEmulator | None = None, stdin: bytes | None = None
) -> Completed:
    """Run `python -m osvi_async.cli ARGS` with the emulator's token and URL in the env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSVI_")}
    env["COLUMNS"] = "200"
    if emulator is not None:
        env["OSVI_API_TOKEN"] = emulator.api_token
        env["OSVI_BASE_URL"] = emulator.base_url
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "osvi_async.cli",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    assert process.returncode is not None
    return Completed(process.returncode, out.decode(), err.decode())


def assert_clean(result: Completed, token: str) -> None:
    """No traceback and no token anywhere in what the command printed."""
    assert "Traceback" not in result.err
    assert token not in result.out
    assert token not in result.err


async def test_inject_prints_bucket(osvi_emulator: OsviEmulator) -> None:
    """`inject` appends and prints the numbered bucket; exit 0."""
    session = osvi_emulator.create_session(context=["first"])
    result = await osvi("inject", session, "second", emulator=osvi_emulator)
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["1. first", "2. second"]
    assert osvi_emulator.applied(session) == ("second",)
    assert_clean(result, osvi_emulator.api_token)


async def test_inject_json_output(osvi_emulator: OsviEmulator) -> None:
    """`inject --json` prints the result as one JSON object."""
    session = osvi_emulator.create_session()
    result = await osvi("inject", "--json", session, "x", emulator=osvi_emulator)
    assert json.loads(result.out) == {"session_id": session, "context": ["x"]}


async def test_inject_api_error_is_one_line(osvi_emulator: OsviEmulator) -> None:
    """A closed session: exit 1, one line naming the code, no traceback."""
    session = osvi_emulator.create_session()
    osvi_emulator.close_session(session)
    result = await osvi("inject", session, "x", emulator=osvi_emulator)
    assert result.code == 1
    [line] = result.err.strip().splitlines()
    assert line.startswith("error: session_not_found: ")
    assert_clean(result, osvi_emulator.api_token)


async def test_inject_without_token_is_a_usage_error() -> None:
    """No token anywhere: exit 2 and a hint to set OSVI_API_TOKEN."""
    result = await osvi("inject", "4718a326-417b-4dda-90d0-21fd65a11cb8", "x")
    assert result.code == 2
    assert "OSVI_API_TOKEN" in result.err
    assert "Traceback" not in result.err


async def test_inject_bad_session_id_is_a_usage_error(osvi_emulator: OsviEmulator) -> None:
    """An id that is not a UUID is refused before sending: exit 2, nothing received."""
    result = await osvi("inject", "../admin", "x", emulator=osvi_emulator)
    assert result.code == 2
    assert "session_id" in result.err
    assert osvi_emulator.stats.requests_total == 0


async def test_inject_unreachable_api_exits_3() -> None:
    """Nothing listening: exit 3 with the connection error named."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await osvi(
        "inject",
        "--token",
        "0123456789abcdef",
        "--base-url",
        f"http://127.0.0.1:{port}",
        "--timeout",
        "2",
        "4718a326-417b-4dda-90d0-21fd65a11cb8",
        "x",
    )
    assert result.code == 3
    assert "APIConnectionError" in result.err
    assert "0123456789abcdef" not in result.err


async def test_bulk_jsonl_with_malformed_lines(osvi_emulator: OsviEmulator, tmp_path: Path) -> None:
    """Malformed lines are failed items naming their line; the rest land; exit 1; full report."""
    a, b = osvi_emulator.create_session(), osvi_emulator.create_session()
    lines = [
        json.dumps({"session_id": a, "context": "a1"}),
        "{not json",
        json.dumps({"session_id": b, "context": "b1"}),
        "",
        json.dumps({"session_id": a}),
        json.dumps({"session_id": a, "context": "a2"}),
    ]
    source = tmp_path / "items.jsonl"
    source.write_text("\n".join(lines) + "\n")
    report = tmp_path / "report.jsonl"
    result = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
    assert result.code == 1
    assert osvi_emulator.applied(a) == ("a1", "a2")
    assert osvi_emulator.applied(b) == ("b1",)
    lines_read = (json.loads(line) for line in report.read_text().splitlines())
    entries = sorted((e for e in lines_read if "ok" in e), key=lambda e: e["index"])
    assert [(e["index"], e["line"], e["ok"]) for e in entries] == [
        (0, 1, True),
        (1, 2, False),
        (2, 3, True),
        (3, 5, False),
        (4, 6, True),
    ]
    assert entries[1]["error"] == "malformed_input"
    assert "line 2" in entries[1]["message"]
    assert "line 5" in entries[3]["message"]
    assert "3 ok, 2 failed" in result.err
    assert_clean(result, osvi_emulator.api_token)
    assert osvi_emulator.api_token not in report.read_text()


async def test_bulk_csv_all_ok(osvi_emulator: OsviEmulator, tmp_path: Path) -> None:
    """A CSV with a header and quoted commas: every row lands in order; exit 0."""
    session = osvi_emulator.create_session()
    source = tmp_path / "items.csv"
    rows = "".join(f'{session},"entry {i}, with a comma"\n' for i in range(30))
    source.write_text("session_id,context\n" + rows)
    result = await osvi("bulk", str(source), "--concurrency", "4", emulator=osvi_emulator)
    assert result.code == 0, result.err
    assert osvi_emulator.applied(session) == tuple(f"entry {i}, with a comma" for i in range(30))


async def test_bulk_from_stdin(osvi_emulator: OsviEmulator) -> None:
    """`-` reads JSON Lines from stdin."""
    session = osvi_emulator.create_session()
    data = "".join(json.dumps({"session_id": session, "context": f"s{i}"}) + "\n" for i in range(5))
    result = await osvi("bulk", "-", emulator=osvi_emulator, stdin=data.encode())
    assert result.code == 0, result.err
    assert osvi_emulator.applied(session) == tuple(f"s{i}" for i in range(5))


async def test_bulk_resume_does_not_resend_what_was_refused_for_good(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """An engine refusal is final: the session's later item still goes, --resume resends none."""
    good, flaky = osvi_emulator.create_session(), osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(flaky, ["engine_rejected"])
    items = [(good, "g1"), (flaky, "f1"), (good, "g2"), (flaky, "f2")]
    source = tmp_path / "items.jsonl"
    source.write_text("".join(json.dumps({"session_id": s, "context": c}) + "\n" for s, c in items))
    report = tmp_path / "report.jsonl"
    first = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
    assert first.code == 1
    assert osvi_emulator.applied(flaky) == ("f2",)
    received = osvi_emulator.stats.requests_total
    second = await osvi(
        "bulk", str(source), "--report", str(report), "--resume", emulator=osvi_emulator
    )
    assert second.code == 1, second.err
    assert osvi_emulator.stats.requests_total == received
    assert osvi_emulator.applied(good) == ("g1", "g2")
    assert "0 ok, 0 failed, 3 skipped (already done), 0 held, 1 final (not resent)" in second.err


async def test_bulk_usage_errors(tmp_path: Path) -> None:
    """--resume without --report, a missing file and a bad option all exit 2."""
    source = tmp_path / "x.jsonl"
    source.write_text("")
    no_report = await osvi("bulk", str(source), "--resume")
    assert (no_report.code, "--resume needs --report" in no_report.err) == (2, True)
    missing = await osvi("bulk", str(tmp_path / "missing.jsonl"))
    assert (missing.code, "no such input file" in missing.err) == (2, True)
    zero = await osvi("bulk", str(source), "--concurrency", "0")
    assert (zero.code, "--concurrency" in zero.err) == (2, True)


async def test_demo_verifies_its_run() -> None:
    """The demo, scaled down, finishes with a verified OK and exit 0."""
    result = await osvi("demo", "--sessions", "20", "--entries", "400")
    assert result.code == 0, result.out + result.err
    assert "OK: every accepted entry landed exactly once" in result.out
    assert "400 / 0" in result.out


async def test_serve_subcommand_runs_until_sigterm() -> None:
    """`osvi-async serve --port 0` announces its URL and exits 0 on SIGTERM."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "osvi_async.cli",
        "serve",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    first = await asyncio.wait_for(process.stdout.readline(), timeout=30)
    assert b"http://127.0.0.1:" in first
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), timeout=10) == 0
