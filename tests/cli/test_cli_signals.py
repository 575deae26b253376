"""SIGINT and SIGTERM stop `osvi-async bulk` gracefully; a second signal stops it at once.

Real signals to a real process, against the emulator with latency so items are in flight
when the signal lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import sys
from pathlib import Path
from typing import Final

import pytest

from osvi_async import InjectRequest
from osvi_async.testing import FaultPlan, OsviEmulator
from tests.chaos._cli import (
    STOP_CODES,
    cli_env,
    judge,
    last_outcomes,
    outcome_lines,
    report_entries,
    run_bulk_cli,
    start_bulk,
    wait_for_outcomes,
    wait_for_stderr,
    write_input,
)
from tests.chaos._harness import wait_until

SESSIONS = 40
ITEMS = 800


def _items(emulator: OsviEmulator, tag: str) -> list[InjectRequest]:
    sessions = [emulator.create_session() for _ in range(SESSIONS)]
    return [InjectRequest(sessions[i % SESSIONS], f"{tag} {i}") for i in range(ITEMS)]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_signal_drains_then_resume_completes_without_duplicates(
    osvi_emulator: OsviEmulator, tmp_path: Path, signum: int
) -> None:
    """A signal mid-run: in-flight items finish, exit 130/143, one summary line; resume: 0 dups."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=(0.02, 0.06))
    items = _items(osvi_emulator, signal.Signals(signum).name)
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    write_input(source, items)
    cli = await start_bulk(
        osvi_emulator, tmp_path, str(source), "--report", str(report), "--concurrency", "16"
    )
    assert await wait_for_outcomes(cli, report, 50)
    cli.send(signum)
    code = await cli.wait()
    stderr = cli.stderr
    assert code == STOP_CODES[signum], stderr
    assert "Traceback" not in stderr
    assert f"stopped by {signal.Signals(signum).name}" in stderr
    assert "run again with --resume" in stderr
    # Every item that was sent has its outcome: the drain let in-flight attempts finish.
    entries = report_entries(report)
    sent = {entry["index"] for entry in entries if entry.get("sending")}
    last = last_outcomes(report)
    assert sent <= set(last)
    finished = {i for i, line in last.items() if line["ok"] is True}
    assert sent == finished
    unsent = [line for i, line in last.items() if i not in finished]
    assert all(line["error"] == "RunStoppedError" for line in unsent)
    assert all(line["may_have_been_applied"] is False for line in unsent)
    assert len(finished) < ITEMS

    code, stderr = await run_bulk_cli(
        osvi_emulator, tmp_path, str(source), "--report", str(report), "--resume"
    )
    assert code == 0, stderr
    assert f"{ITEMS - len(finished)} ok, 0 failed, {len(finished)} skipped" in stderr
    verdict = judge(osvi_emulator, items, report)
    assert (verdict.lost, verdict.duplicates, verdict.out_of_order) == ([], [], [])
    assert verdict.missing == []
    assert verdict.applied == ITEMS


async def test_second_signal_stops_at_once(osvi_emulator: OsviEmulator, tmp_path: Path) -> None:
    """With answers slower than any wait, a second SIGINT ends the run at once, flagged."""
    osvi_emulator.fault_plan = FaultPlan(latency=0.2, latency_seconds=30.0)
    items = _items(osvi_emulator, "twice")
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    write_input(source, items)
    cli = await start_bulk(
        osvi_emulator,
        tmp_path,
        str(source),
        "--report",
        str(report),
        "--concurrency",
        "16",
        "--grace",
        "60",
    )
    assert await wait_for_outcomes(cli, report, 20)
    cli.send(signal.SIGINT)
    assert await wait_for_stderr(cli, "SIGINT: stopping;")  # seen: two signals never merge
    cli.send(signal.SIGINT)
    code = await cli.wait(timeout=15)  # far less than the grace or the latency
    stderr = cli.stderr
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert "stopped by SIGINT (at once)" in stderr
    last = last_outcomes(report)
    sent = {entry["index"] for entry in report_entries(report) if entry.get("sending")}
    assert sent <= set(last)
    stopped = {i: line for i, line in last.items() if line["error"] == "RunStoppedError"}
    cut = [i for i in stopped if i in sent]
    assert cut, "the slow items in flight were cut off"
    assert all(stopped[i]["may_have_been_applied"] is True for i in cut)
    assert all(
        line["may_have_been_applied"] is False for i, line in stopped.items() if i not in sent
    )


_READ_SYSCALL: Final = {"x86_64": 0, "aarch64": 63}[platform.machine()]


def _blocked_reading_stdin(pid: int) -> bool:
    """Whether the process sits in read(0, ...) (Linux: /proc/PID/syscall)."""
    fields = Path(f"/proc/{pid}/syscall").read_text().split()
    return len(fields) > 1 and fields[0] == str(_READ_SYSCALL) and int(fields[1], 16) == 0


def _catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for `signum` (Linux: SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


async def test_sigterm_before_the_run_starts_is_one_line(osvi_emulator: OsviEmulator) -> None:
    """SIGTERM while bulk still waits for its first input line: exit 143, one line, no trace."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "osvi_async.cli",
        "bulk",
        "-",
        env=cli_env(osvi_emulator),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # Blocked reading stdin means the CLI's own handler is in place: catching SIGTERM alone
    # is not proof, since coverage's subprocess hook installs a handler of its own earlier.
    assert await wait_until(lambda: _blocked_reading_stdin(process.pid), timeout=30)
    assert _catches(process.pid, signal.SIGTERM)
    process.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 143
    [line] = err.decode().strip().splitlines()
    assert line.startswith("error: stopped by SIGTERM")
    assert osvi_emulator.stats.requests_total == 0


EARLY_MOMENTS: Final = (0.0, 0.02, 0.05, 0.1, 0.2)
"""Seconds after the entry point's handlers are in place (click, rich and the commands still
loading at the first ones; reading input or building the demo's items at the last)."""


def _cli_only_env(emulator: OsviEmulator) -> dict[str, str]:
    """The CLI's environment without coverage's hooks, whose own SIGTERM handler would mask ours."""
    return {k: v for k, v in cli_env(emulator).items() if not k.startswith("COVERAGE_")}


@pytest.mark.parametrize("command", ["bulk", "demo"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_early_signals_end_every_command_with_one_line(
    osvi_emulator: OsviEmulator, command: str, signum: int
) -> None:
    """A signal while the command is still starting: 130/143, one line, no traceback, no send."""
    args = ["bulk", "-"] if command == "bulk" else ["demo", "--entries", "200000"]
    name = signal.Signals(signum).name
    for delay in EARLY_MOMENTS:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "osvi_async.cli",
            *args,
            env=_cli_only_env(osvi_emulator),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        # SIGTERM is caught only once the entry point installed its handlers.
        pid = process.pid
        assert await wait_until(lambda: _catches(pid, signal.SIGTERM), timeout=30)  # noqa: B023
        await asyncio.sleep(delay)
        process.send_signal(signum)
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
        text = err.decode()
        assert process.returncode == 128 + signum, (delay, text)
        assert "Traceback" not in text
        assert text.strip().splitlines() == [f"error: stopped by {name}"], (delay, text)
    assert osvi_emulator.stats.requests_total == 0


LATE_MOMENTS: Final = (0.0, 0.002, 0.005, 0.01, 0.02, 0.04)
"""Seconds after the summary line appears (the interpreter's teardown used to take ~40 ms)."""


async def _signal_after_summary(
    emulator: OsviEmulator, source: Path, signum: int, delay: float
) -> tuple[int, list[str]]:
    """Run bulk to its summary, signal it `delay` s later: (exit code, stderr lines after)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "osvi_async.cli", "bulk", str(source),
        env=_cli_only_env(emulator),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    while b" ok, " not in (line := await process.stderr.readline()):
        assert line, "no summary line"
    await asyncio.sleep(delay)
    with contextlib.suppress(ProcessLookupError):  # already exited and reaped
        os.kill(process.pid, signum)
    rest = await asyncio.wait_for(process.stderr.read(), timeout=30)
    code = await asyncio.wait_for(process.wait(), timeout=30)
    return code, rest.decode().splitlines()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_signal_right_after_the_summary_is_never_a_silent_death(
    osvi_emulator: OsviEmulator, tmp_path: Path, signum: int
) -> None:
    """A signal just after the summary: exit 0 (done before it) or 130/143 with one line."""
    source = tmp_path / "items.jsonl"
    write_input(source, _items(osvi_emulator, "late")[:5])
    for delay in LATE_MOMENTS:
        code, rest = await _signal_after_summary(osvi_emulator, source, signum, delay)
        assert code in (0, 128 + signum), (delay, code, rest)
        if code:
            assert rest == [f"error: stopped by {signal.Signals(signum).name}"], (delay, rest)
        else:
            assert rest == [], (delay, rest)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_stop_with_nothing_left_to_send_still_exits_130_or_143(
    osvi_emulator: OsviEmulator, tmp_path: Path, signum: int
) -> None:
    """A signal while the last items are in flight: they finish, yet the exit is 130/143."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=1.0)
    items = _items(osvi_emulator, "last")[:3]
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    write_input(source, items)
    cli = await start_bulk(osvi_emulator, tmp_path, str(source), "--report", str(report))
    assert await wait_until(
        lambda: sum(bool(e.get("sending")) for e in report_entries(report)) == len(items),
        timeout=30,
    )
    cli.send(signum)
    code = await cli.wait()
    stderr = cli.stderr
    name = signal.Signals(signum).name
    assert code == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert f"stopped by {name} (after in-flight items finished): 3 ok, 0 failed" in stderr
    assert "run again with --resume" not in stderr
    assert [osvi_emulator.applied(item.session_id) for item in items] == [
        (item.context,) for item in items
    ]


async def test_summary_and_stop_lines_are_never_wrapped(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """Stderr piped at 80 columns: the stop notice and every summary are one line each."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=(0.02, 0.06))
    items = _items(osvi_emulator, "narrow")
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    write_input(source, items)
    env = {**_cli_only_env(osvi_emulator), "COLUMNS": "80"}
    stderr_path = tmp_path / "stderr.txt"

    async def bulk(*args: str) -> tuple[int, list[str]]:
        with stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "osvi_async.cli", "bulk", str(source),
                "--report", str(report), "--concurrency", "16", *args,
                env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
        if not args:
            assert await wait_until(lambda: outcome_lines(report) >= 50, timeout=30)
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=60)
        return code, stderr_path.read_text().splitlines()

    code, lines = await bulk()
    assert code == 143, lines
    [notice] = [line for line in lines if line.startswith("SIGTERM: stopping;")]
    assert notice.endswith("(signal again to stop at once)")
    [summary] = [line for line in lines if line.startswith("stopped by SIGTERM")]
    assert len(summary) > 80
    assert summary.endswith("may have been applied; run again with --resume")

    osvi_emulator.fault_plan = FaultPlan()
    code, lines = await bulk("--resume")
    assert code == 0, lines
    [summary] = [line for line in lines if " ok, 0 failed, " in line]
    assert len(summary) > 80
    assert summary.endswith(" retries")
    assert "Traceback" not in "\n".join(lines)
