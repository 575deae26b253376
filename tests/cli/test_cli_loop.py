"""`osvi-async --loop` and `--http-backend`: the loop every command runs on, the client's stack.

Real processes against the emulator. The CLI runs through a two-line wrapper that shows the
`osvi_async.loop` logger's DEBUG record ("event loop: uvloop"), as a user's logging config
would: it is written from inside the run, so it names the loop that ran, not the one asked
for. A directory on PYTHONPATH holding `uvloop.py` or `pyreqwest.py` that raises ImportError
stands for an install without that package.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import pytest

from osvi_async import InjectRequest
from osvi_async._transport import HTTP_BACKENDS
from osvi_async.testing import FaultPlan, OsviEmulator
from tests.chaos._cli import (
    STOP_CODES,
    Cli,
    cli_env,
    judge,
    last_outcomes,
    outcome_lines,
    report_entries,
    wait_for_outcomes,
    wait_for_stderr,
    write_input,
)
from tests.cli.test_cli import Completed

_LOGGED_CLI: Final = """\
import logging, sys
handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
logger = logging.getLogger("osvi_async.loop")
logger.setLevel(logging.DEBUG)
logger.addHandler(handler)
from osvi_async.cli import main
main()
"""
_LOOP_LINE: Final = "osvi_async.loop: event loop: "
_RUN_SECONDS: Final = 60


def _env(
    emulator: OsviEmulator | None, extra: Mapping[str, str] | None, blocked: Path | None
) -> dict[str, str]:
    """The CLI's environment: no OSVI_* but the emulator's, `blocked` first on the path."""
    if emulator is not None:
        env = cli_env(emulator)
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OSVI_")}
    if blocked is not None:
        env["PYTHONPATH"] = str(blocked)
    return env | dict(extra or {})


async def _start(
    *args: str,
    emulator: OsviEmulator | None,
    stderr_path: Path,
    env: Mapping[str, str] | None = None,
    blocked: Path | None = None,
) -> Cli:
    """Start `osvi-async ARGS` (its loop logged), stderr in `stderr_path`."""
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _LOGGED_CLI,
            *args,
            env=_env(emulator, env, blocked),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    return Cli(process, stderr_path)


async def _run(
    *args: str,
    emulator: OsviEmulator | None,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    blocked: Path | None = None,
) -> Completed:
    """Run `osvi-async ARGS` (its loop logged) to its end."""
    cli = await _start(
        *args, emulator=emulator, stderr_path=workdir / "stderr.txt", env=env, blocked=blocked
    )
    assert cli.process.stdout is not None
    out = await asyncio.wait_for(cli.process.stdout.read(), timeout=_RUN_SECONDS)
    code = await cli.wait(_RUN_SECONDS)
    return Completed(code, out.decode(), cli.stderr)


def _loops(stderr: str) -> list[str]:
    """The loops the process logged having run on, in order."""
    return [line.removeprefix(_LOOP_LINE) for line in stderr.splitlines() if _LOOP_LINE in line]


def _block(directory: Path, *modules: str) -> Path:
    """A directory that, first on PYTHONPATH, makes importing `modules` fail."""
    directory.mkdir(exist_ok=True)
    for module in modules:
        (directory / f"{module}.py").write_text('raise ImportError("blocked by the test")\n')
    return directory


def _one_line(result: Completed) -> str:
    """The single line a failed command printed on stderr (the wrapper's loop line aside)."""
    assert "Traceback" not in result.err
    [line] = [line for line in result.err.strip().splitlines() if _LOOP_LINE not in line]
    return line


@pytest.mark.parametrize("backend", HTTP_BACKENDS)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_bulk_on_uvloop_stops_gracefully_on_a_signal(
    osvi_emulator: OsviEmulator, tmp_path: Path, signum: int, backend: str
) -> None:
    """On uvloop, a signal mid-run drains it: 130/143, the report whole, accepted entries once."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=(0.02, 0.06))
    sessions = [osvi_emulator.create_session() for _ in range(20)]
    items = [InjectRequest(sessions[i % 20], f"uvloop {i}") for i in range(600)]
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    write_input(source, items)
    cli = await _start(
        "--loop", "uvloop", "bulk", str(source), "--report", str(report), "--concurrency", "16",
        "--http-backend", backend, emulator=osvi_emulator, stderr_path=tmp_path / "stderr.txt",
    )  # fmt: skip
    assert await wait_for_outcomes(cli, report, 40)
    assert outcome_lines(report) >= 40, cli.stderr  # mid-run, not still starting
    cli.send(signum)
    code = await cli.wait()
    stderr = cli.stderr
    assert code == STOP_CODES[signal.Signals(signum)], stderr
    assert "Traceback" not in stderr
    assert _loops(stderr) == ["uvloop"]
    assert f"stopped by {signal.Signals(signum).name} (after in-flight items finished)" in stderr
    lines = report.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a whole line
    assert all(isinstance(json.loads(line), dict) for line in lines[:-1])
    last = last_outcomes(report)
    sent = {entry["index"] for entry in report_entries(report) if entry.get("sending")}
    accepted = {index for index, line in last.items() if line["ok"] is True}
    assert sent == accepted  # the drain let every item in flight finish
    assert 0 < len(accepted) < len(items)
    verdict = judge(osvi_emulator, items, report)
    assert (verdict.lost, verdict.duplicates, verdict.out_of_order) == ([], [], [])
    assert verdict.applied == len(accepted)


@pytest.mark.parametrize("backend", HTTP_BACKENDS)
async def test_a_second_signal_on_uvloop_stops_at_once(
    osvi_emulator: OsviEmulator, tmp_path: Path, backend: str
) -> None:
    """On uvloop, a second SIGINT ends a run whose answers never come: 130, cut items flagged."""
    osvi_emulator.fault_plan = FaultPlan(latency=0.2, latency_seconds=30.0)
    sessions = [osvi_emulator.create_session() for _ in range(20)]
    items = [InjectRequest(sessions[i % 20], f"twice {i}") for i in range(400)]
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    write_input(source, items)
    cli = await _start(
        "--loop", "uvloop", "bulk", str(source), "--report", str(report), "--concurrency", "16",
        "--grace", "60", "--http-backend", backend,
        emulator=osvi_emulator, stderr_path=tmp_path / "stderr.txt",
    )  # fmt: skip
    assert await wait_for_outcomes(cli, report, 20)
    cli.send(signal.SIGINT)
    assert await wait_for_stderr(cli, "SIGINT: stopping;")
    cli.send(signal.SIGINT)
    code = await cli.wait(timeout=15)  # far less than the grace or the latency
    stderr = cli.stderr
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert _loops(stderr) == ["uvloop"]
    assert "stopped by SIGINT (at once)" in stderr
    last = last_outcomes(report)
    sent = {int(str(e["index"])) for e in report_entries(report) if e.get("sending")}
    assert sent <= set(last)
    cut = [i for i in sent if last[i]["error"] == "RunStoppedError"]
    assert cut, "the slow items in flight were cut off"
    assert all(last[i]["may_have_been_applied"] is True for i in cut)


async def test_demo_on_uvloop_verifies_its_run(tmp_path: Path) -> None:
    """`--loop uvloop demo` runs on uvloop, says so in its table, verifies and exits 0."""
    result = await _run(
        "--loop", "uvloop", "demo", "--sessions", "20", "--entries", "400",
        emulator=None, workdir=tmp_path,
    )  # fmt: skip
    assert result.code == 0, result.out + result.err
    assert _loops(result.err) == ["uvloop"]
    assert "OK: every accepted entry landed exactly once" in result.out
    assert "uvloop / aiohttp" in result.out


@pytest.mark.parametrize(
    ("args", "env", "ran"),
    [
        (["--loop", "uvloop"], {}, "uvloop"),
        (["--loop", "asyncio"], {}, "asyncio"),
        ([], {}, "uvloop"),  # auto, with uvloop installed
        ([], {"OSVI_EVENT_LOOP": "asyncio"}, "asyncio"),
        (["--loop", "uvloop"], {"OSVI_EVENT_LOOP": "asyncio"}, "uvloop"),
    ],
    ids=["flag-uvloop", "flag-asyncio", "auto", "env-asyncio", "flag-over-env"],
)
async def test_the_chosen_loop_runs_the_command(
    osvi_emulator: OsviEmulator,
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    ran: str,
) -> None:
    """--loop, else $OSVI_EVENT_LOOP, else auto decides the loop a command's run is on."""
    session = osvi_emulator.create_session()
    result = await _run(
        *args, "inject", session, "hello", emulator=osvi_emulator, workdir=tmp_path, env=env
    )
    assert result.code == 0, result.err
    assert _loops(result.err) == [ran]
    assert osvi_emulator.applied(session) == ("hello",)


async def test_an_unknown_loop_in_the_variable_is_one_line(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """OSVI_EVENT_LOOP=bogus: exit 2, one line naming the variable, nothing sent."""
    session = osvi_emulator.create_session()
    result = await _run(
        "inject", session, "hello",
        emulator=osvi_emulator, workdir=tmp_path, env={"OSVI_EVENT_LOOP": "bogus"},
    )  # fmt: skip
    assert result.code == 2
    line = _one_line(result)
    assert line.startswith("error: ")
    assert "OSVI_EVENT_LOOP" in line
    assert "'bogus'" in line
    assert osvi_emulator.stats.requests_total == 0


async def test_uvloop_asked_for_but_missing_is_one_line(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """Without uvloop, --loop uvloop is exit 2 with one line; auto then runs on asyncio."""
    blocked = _block(tmp_path / "blocked", "uvloop")
    session = osvi_emulator.create_session()
    refused = await _run(
        "--loop", "uvloop", "inject", session, "refused",
        emulator=osvi_emulator, workdir=tmp_path, blocked=blocked,
    )  # fmt: skip
    assert refused.code == 2
    assert _one_line(refused) == (
        "error: event loop uvloop is not installed: pip install 'osvi-async[fast]', "
        "or choose auto or asyncio"
    )
    assert osvi_emulator.stats.requests_total == 0
    auto = await _run(
        "inject", session, "on asyncio", emulator=osvi_emulator, workdir=tmp_path, blocked=blocked
    )
    assert auto.code == 0, auto.err
    assert _loops(auto.err) == ["asyncio"]
    assert osvi_emulator.applied(session) == ("on asyncio",)


async def test_serve_runs_on_the_chosen_loop(tmp_path: Path) -> None:
    """`osvi-async --loop uvloop serve` serves on uvloop and still exits 0 on SIGTERM."""
    cli = await _start(
        "--loop", "uvloop", "serve", "--port", "0", emulator=None, stderr_path=tmp_path / "err"
    )
    assert cli.process.stdout is not None
    first = await asyncio.wait_for(cli.process.stdout.readline(), timeout=30)
    assert b"http://127.0.0.1:" in first
    cli.send(signal.SIGTERM)
    assert await cli.wait(10) == 0
    assert _loops(cli.stderr) == ["uvloop"]


_CLIENT_COMMANDS: Final = {
    "inject": ["inject", "SESSION", "text"],
    "bulk": ["bulk", "INPUT"],
    "session-create": ["session", "create", "--agent", "a-1", "--customer", "c-1"],
    "session-get": ["session", "get", "--customer", "c-1", "--agent", "a-1"],
    "message-send": ["message", "send", "hi", "--agent", "a-1", "--customer", "c-1"],
    "demo": ["demo", "--sessions", "2", "--entries", "10"],
    "worker": ["worker", "--broker", "amqp://guest:guest@127.0.0.1:9/"],
}


@pytest.mark.parametrize("command", list(_CLIENT_COMMANDS))
async def test_http_backend_reaches_every_client(
    osvi_emulator: OsviEmulator, tmp_path: Path, command: str
) -> None:
    """--http-backend reqwest gets to each command's client: without pyreqwest, exit 2, one line."""
    session = osvi_emulator.create_session()
    source = tmp_path / "items.jsonl"
    write_input(source, [InjectRequest(session, "text")])
    args = [
        {"SESSION": session, "INPUT": str(source)}.get(word, word)
        for word in _CLIENT_COMMANDS[command]
    ]
    result = await _run(
        *args, "--http-backend", "reqwest",
        emulator=osvi_emulator, workdir=tmp_path, blocked=_block(tmp_path / "b", "pyreqwest"),
    )  # fmt: skip
    assert result.code == 2, result.err
    line = _one_line(result)
    assert line.startswith("error: ")
    assert "pip install 'osvi-async[reqwest]'" in line
    assert result.out == ""  # nothing before the error either (the demo had its banner)
    assert osvi_emulator.stats.requests_total == 0
    assert osvi_emulator.applied(session) == ()


async def test_http_backend_from_the_variable_and_the_default(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """OSVI_HTTP_BACKEND=reqwest reaches the client too; the default (aiohttp) needs no pyreqwest;
    a bad value in the variable is one line naming it."""
    blocked = _block(tmp_path / "blocked", "pyreqwest")
    session = osvi_emulator.create_session()
    by_env = await _run(
        "inject", session, "text", emulator=osvi_emulator, workdir=tmp_path, blocked=blocked,
        env={"OSVI_HTTP_BACKEND": "reqwest"},
    )  # fmt: skip
    assert by_env.code == 2
    assert "pip install 'osvi-async[reqwest]'" in _one_line(by_env)
    bad = await _run(
        "inject", session, "text", emulator=osvi_emulator, workdir=tmp_path,
        env={"OSVI_HTTP_BACKEND": "curl"},
    )  # fmt: skip
    assert bad.code == 2
    assert "OSVI_HTTP_BACKEND" in _one_line(bad)
    assert osvi_emulator.stats.requests_total == 0
    default = await _run(
        "inject", session, "sent", emulator=osvi_emulator, workdir=tmp_path, blocked=blocked
    )
    assert default.code == 0, default.err
    assert osvi_emulator.applied(session) == ("sent",)
