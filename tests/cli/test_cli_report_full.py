"""A report that stops growing mid-run (a full disk): the run stops at once and says so.

Exit 1 (items were sent, so not 2), the summary and one error line, no traceback; nothing the
emulator applied lacks its intent line, and a resume once there is room completes the job.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from osvi_async import InjectRequest, OsviClient
from osvi_async.cli._bulk_io import Record
from osvi_async.cli._bulk_run import BulkCounts, run_bulk
from osvi_async.cli._progress import BulkProgress
from osvi_async.cli._report import ReportWriter
from osvi_async.testing import FaultPlan, OsviEmulator
from tests.chaos._cli import cli_env, judge, report_entries, run_bulk_cli, write_input

ITEMS = 1000
SESSIONS = 40
ROOM = 64 * 1024  # bytes the report may take: a few hundred lines


def _items(emulator: OsviEmulator) -> list[InjectRequest]:
    sessions = [emulator.create_session() for _ in range(SESSIONS)]
    return [InjectRequest(sessions[i % SESSIONS], f"full {i}") for i in range(ITEMS)]


@contextmanager
def _tiny_filesystem(directory: Path) -> Iterator[bool]:
    """A 64 KiB tmpfs at `directory` (True), or False where mounting is not allowed."""
    directory.mkdir()
    mounted = shutil.which("mount") is not None and (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={ROOM}", "tmpfs", str(directory)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(directory)], check=True)


def _limit_file_size() -> None:  # pragma: no cover - runs in the child, before exec
    """Where tmpfs cannot be mounted: writes past ROOM bytes fail (EFBIG, SIGXFSZ ignored)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (ROOM, ROOM))


async def test_a_full_disk_stops_the_run_with_a_summary_and_exit_1(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """ENOSPC mid-run: exit 1, summary + one error line; resume after freeing space completes."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=(0.001, 0.005))
    items = _items(osvi_emulator)
    source = tmp_path / "items.jsonl"
    write_input(source, items)
    stderr_path = tmp_path / "stderr.txt"
    with _tiny_filesystem(tmp_path / "tiny") as mounted:
        report = tmp_path / "tiny" / "report.jsonl"
        with stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "osvi_async.cli", "bulk", str(source),
                "--report", str(report), "--concurrency", "16",
                env=cli_env(osvi_emulator), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
                preexec_fn=None if mounted else _limit_file_size,
            )  # fmt: skip
        code = await asyncio.wait_for(process.wait(), timeout=60)
        saved = tmp_path / "report.jsonl"
        shutil.copyfile(report, saved)  # "free some space": the report moves to a roomier disk
    err = stderr_path.read_text()
    assert code == 1, err
    assert "Traceback" not in err
    lines = err.splitlines()
    [summary] = [line for line in lines if line.startswith("stopped by a failed report write")]
    assert "run again with --resume" in summary
    [error] = [line for line in lines if line.startswith("error: ")]
    reason = "No space left on device" if mounted else "File too large"
    assert error == (
        f"error: cannot write report {report}: {reason}; the run stopped at once. "
        "Free some space, then run again with --resume"
    )
    # Nothing reached the server without its intent line in the report.
    intents = {entry["index"] for entry in report_entries(saved) if entry.get("sending")}
    applied = {
        int(entry.split()[1])
        for session in {item.session_id for item in items}
        for entry in osvi_emulator.applied(session)
    }
    assert 0 < len(applied) < ITEMS
    assert applied <= intents

    osvi_emulator.fault_plan = FaultPlan()
    code, err = await run_bulk_cli(
        osvi_emulator, tmp_path, str(source), "--report", str(saved), "--resume"
    )
    assert code == 0, err
    verdict = judge(osvi_emulator, items, saved)
    assert (verdict.lost, verdict.unflagged, verdict.out_of_order) == ([], [], [])
    assert verdict.missing == []
    assert verdict.applied >= ITEMS


class _FullDisk(io.RawIOBase):
    """A report file with room for `room` bytes; then every write raises ENOSPC."""

    def __init__(self, room: int) -> None:
        self.data = bytearray()
        self._room = room

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        chunk = bytes(data)  # type: ignore[call-overload]
        if len(self.data) + len(chunk) > self._room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.data += chunk
        return len(chunk)


async def test_run_loop_stops_at_once_when_the_report_cannot_grow(
    osvi_emulator: OsviEmulator,
) -> None:
    """The run loop with a file that raises ENOSPC: no exception, the run stops, counts add up."""
    items = _items(osvi_emulator)
    records = (Record(i, i + 1, item) for i, item in enumerate(items))
    file = _FullDisk(room=20_000)
    writer = ReportWriter(file)
    counts = BulkCounts(to_send=ITEMS)
    progress = BulkProgress(Console(file=io.StringIO()), counts, ITEMS, description="test")
    async with OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url) as client:
        await run_bulk(
            client, records, report=writer, resume=None, counts=counts, progress=progress,
            concurrency=16, rate_limit=None,
        )  # fmt: skip
    assert isinstance(writer.failure, OSError)
    assert writer.failure.errno == errno.ENOSPC
    assert counts.finished == counts.read  # every item read has its outcome
    assert counts.stopped > 0
    assert counts.ok < ITEMS
    written = [json.loads(line) for line in file.data.decode().splitlines()]
    intents = {entry["index"] for entry in written if entry.get("sending")}
    applied = sum(len(osvi_emulator.applied(s)) for s in {item.session_id for item in items})
    assert applied <= len(intents)
    assert counts.summary(None, stopped_by="a failed report write (at once)").startswith(
        "stopped by a failed report write (at once): "
    )
