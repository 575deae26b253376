"""Which files `bulk --report` accepts: never one that is not ours, in use, or not a file.

Every refusal is exit 2 with one line on stderr, before anything is sent and before anything
is written: the file is compared byte for byte afterwards.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from osvi_async import InjectRequest
from osvi_async.testing import FaultPlan, OsviEmulator
from tests.chaos._cli import judge, run_bulk_cli, start_bulk, wait_for_outcomes, write_input
from tests.cli.test_cli import assert_clean, osvi


def _input(emulator: OsviEmulator, path: Path, count: int = 6) -> list[InjectRequest]:
    sessions = [emulator.create_session() for _ in range(3)]
    items = [InjectRequest(sessions[i % 3], f"item {i}") for i in range(count)]
    write_input(path, items)
    return items


def _one_line(err: str, *words: str) -> str:
    [line] = err.strip().splitlines()
    assert line.startswith("error: ")
    for word in words:
        assert word in line, line
    return line


@pytest.mark.parametrize("resume", [False, True], ids=["new-run", "resume"])
@pytest.mark.parametrize(
    "content",
    [b"my notes, one line\n", b"no newline at all", b"line 1\nline 2 torn", b"[1, 2]\n{}\n"],
    ids=["one-line", "unterminated", "torn-tail", "json"],
)
async def test_a_file_that_is_not_a_report_is_refused_untouched(
    osvi_emulator: OsviEmulator, tmp_path: Path, resume: bool, content: bytes
) -> None:
    """A non-empty file without our header: exit 2, one line, nothing sent, not one byte changed."""
    source = tmp_path / "items.jsonl"
    _input(osvi_emulator, source)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(content)
    before = os.stat(notes)
    args = ["bulk", str(source), "--report", str(notes)] + (["--resume"] if resume else [])
    result = await osvi(*args, emulator=osvi_emulator)
    assert result.code == 2, result.err
    _one_line(result.err, "is not an osvi-async report", "choose another --report path")
    assert notes.read_bytes() == content
    assert os.stat(notes).st_mtime_ns == before.st_mtime_ns
    assert osvi_emulator.stats.requests_total == 0
    assert_clean(result, osvi_emulator.api_token)


@pytest.mark.parametrize("resume", [False, True], ids=["new-run", "resume"])
async def test_the_input_itself_as_report_is_refused_untouched(
    osvi_emulator: OsviEmulator, tmp_path: Path, resume: bool
) -> None:
    """--report naming INPUT: exit 2, the input file unchanged, nothing sent."""
    source = tmp_path / "items.jsonl"
    _input(osvi_emulator, source)
    content = source.read_bytes()
    args = ["bulk", str(source), "--report", str(source)] + (["--resume"] if resume else [])
    result = await osvi(*args, emulator=osvi_emulator)
    assert result.code == 2, result.err
    _one_line(result.err, "is not an osvi-async report")
    assert source.read_bytes() == content
    assert osvi_emulator.stats.requests_total == 0


@pytest.mark.parametrize("device", ["/dev/null", "/dev/full"])
async def test_a_device_as_report_is_refused(
    osvi_emulator: OsviEmulator, tmp_path: Path, device: str
) -> None:
    """/dev/null or /dev/full as --report: exit 2, one line, nothing sent (and no endless read)."""
    source = tmp_path / "items.jsonl"
    _input(osvi_emulator, source)
    for resume in ([], ["--resume"]):
        result = await osvi(
            "bulk", str(source), "--report", device, *resume, emulator=osvi_emulator
        )
        assert result.code == 2, result.err
        _one_line(result.err, f"the report {device} is not a regular file")
    assert osvi_emulator.stats.requests_total == 0


async def test_a_fifo_as_report_is_refused_without_hanging(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """A FIFO as --report (no writer on the other end): exit 2 at once, nothing sent."""
    source = tmp_path / "items.jsonl"
    _input(osvi_emulator, source)
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    result = await osvi("bulk", str(source), "--report", str(fifo), emulator=osvi_emulator)
    assert result.code == 2, result.err
    _one_line(result.err, "is not a regular file")
    assert osvi_emulator.stats.requests_total == 0


async def test_same_input_without_resume_is_refused(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """A report that already holds this input's run, and no --resume: exit 2, nothing resent."""
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    items = _input(osvi_emulator, source)
    first = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
    assert first.code == 0, first.err
    journal = report.read_bytes()
    again = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
    assert again.code == 2, again.err
    line = _one_line(again.err, "already holds a run of this input", "add --resume")
    assert "choose another --report path" in line
    assert line.count("--report path") == 1
    assert report.read_bytes() == journal
    assert osvi_emulator.stats.requests_total == len(items)


async def test_stdin_into_an_existing_report_is_refused_with_one_hint(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """stdin as INPUT with a report that already holds a run: exit 2, a single hint."""
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    _input(osvi_emulator, source)
    first = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
    assert first.code == 0, first.err
    sent = osvi_emulator.stats.requests_total
    again = await osvi(
        "bulk", "-", "--report", str(report), emulator=osvi_emulator, stdin=source.read_bytes()
    )
    assert again.code == 2, again.err
    line = _one_line(again.err, "stdin cannot be checked", "choose another --report path")
    assert line.count("--report path") == 1
    assert "resume from the input file instead" not in line
    assert osvi_emulator.stats.requests_total == sent


async def test_a_second_run_on_a_report_in_use_is_refused(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """Two runs on one report: the second exits 2 sending nothing; after a SIGKILL, resume works."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=(0.05, 0.1))
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    items = _input(osvi_emulator, source, count=300)
    first = await start_bulk(
        osvi_emulator, tmp_path, str(source), "--report", str(report), "--concurrency", "4"
    )
    assert await wait_for_outcomes(first, report, 5)
    async with OsviEmulator() as other:  # the second run's traffic would land here
        for resume in ([], ["--resume"]):
            code, stderr = await run_bulk_cli(
                other, tmp_path, str(source), "--report", str(report), *resume
            )
            assert code == 2, stderr
            _one_line(stderr, "is in use by another osvi-async bulk run")
            assert "Traceback" not in stderr
        assert other.stats.requests_total == 0
    first.send(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    code, stderr = await run_bulk_cli(
        osvi_emulator, tmp_path, str(source), "--report", str(report), "--resume"
    )
    assert code == 0, stderr
    verdict = judge(osvi_emulator, items, report)
    assert (verdict.lost, verdict.unflagged, verdict.out_of_order) == ([], [], [])
    assert verdict.missing == []
