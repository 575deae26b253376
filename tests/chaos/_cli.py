"""Running `osvi-async bulk` as a real process, stopping it, and judging its report.

The CLI runs in a subprocess; the emulator runs in the test's own loop, so its `applied`
log is the judge. Each item's context is unique, so the log says how often each item was
applied and in which order. `judge` holds that against the report's last line per item:

- *lost*: the last line says ok, yet the item was never applied;
- *duplicates*: items applied more than once; *unflagged*: of those, the ones whose last
  line is neither ok with `possible_duplicate` nor failed with `may_have_been_applied`;
- *out of order*: sessions whose items were first applied out of input order;
- *false positives*: items flagged `possible_duplicate` that were applied once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from osvi_async import InjectRequest
from osvi_async.testing import OsviEmulator


def write_input(path: Path, items: Sequence[InjectRequest]) -> None:
    """Write the items as JSON Lines, record i on line i + 1."""
    path.write_text(
        "".join(
            json.dumps({"session_id": item.session_id, "context": item.context}) + "\n"
            for item in items
        )
    )


def cli_env(emulator: OsviEmulator) -> dict[str, str]:
    """This process's environment without OSVI_*, plus the emulator's token and URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSVI_")}
    env["COLUMNS"] = "200"
    env["OSVI_API_TOKEN"] = emulator.api_token
    env["OSVI_BASE_URL"] = emulator.base_url
    return env


@dataclass
class Cli:
    """One `osvi-async bulk` process; its stderr goes to a file (never a pipe that fills)."""

    process: asyncio.subprocess.Process
    stderr_path: Path

    @property
    def stderr(self) -> str:
        """What the process wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def send(self, signum: int) -> None:
        """Send a signal to the process."""
        self.process.send_signal(signum)

    async def wait(self, timeout: float = 60.0) -> int:
        """Wait for the exit code."""
        return await asyncio.wait_for(self.process.wait(), timeout=timeout)


_numbers = itertools.count()


async def start_bulk(emulator: OsviEmulator, workdir: Path, *args: str) -> Cli:
    """Start `python -m osvi_async.cli bulk ARGS` with its stderr in a numbered file."""
    stderr_path = workdir / f"stderr-{next(_numbers)}.txt"
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "osvi_async.cli",
            "bulk",
            *args,
            env=cli_env(emulator),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    return Cli(process, stderr_path)


async def run_bulk_cli(emulator: OsviEmulator, workdir: Path, *args: str) -> tuple[int, str]:
    """Run `bulk ARGS` to its end: (exit code, stderr)."""
    cli = await start_bulk(emulator, workdir, *args)
    code = await cli.wait()
    return code, cli.stderr


def report_entries(report: Path) -> list[dict[str, object]]:
    """The report's complete, readable lines (a torn last line is left out)."""
    if not report.exists():
        return []
    entries = []
    for raw in report.read_bytes().split(b"\n")[:-1]:
        try:
            entries.append(json.loads(raw))
        except ValueError:
            continue
    return entries


def outcome_lines(report: Path) -> int:
    """How many outcome lines the report holds so far."""
    return sum(1 for entry in report_entries(report) if "ok" in entry)


async def wait_for_outcomes(cli: Cli, report: Path, count: int, timeout: float = 30.0) -> bool:
    """Poll until the report holds `count` more outcome lines than now, or the process ends.

    Returns whether the process is still running (so a signal sent now lands mid-run).
    """
    target = outcome_lines(report) + count
    deadline = time.monotonic() + timeout
    while cli.process.returncode is None and time.monotonic() < deadline:
        if outcome_lines(report) >= target:
            return True
        await asyncio.sleep(0.01)
    return cli.process.returncode is None


async def wait_for_stderr(cli: Cli, text: str, timeout: float = 30.0) -> bool:
    """Poll until the process wrote `text` to stderr; False if it ended or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in cli.stderr:
            return True
        if cli.process.returncode is not None:
            return False
        await asyncio.sleep(0.01)
    return False


def last_outcomes(report: Path) -> dict[int, dict[str, object]]:
    """Each record's last outcome line."""
    last: dict[int, dict[str, object]] = {}
    for entry in report_entries(report):
        if "ok" in entry:
            index = entry["index"]
            assert isinstance(index, int)
            last[index] = entry
    return last


def complete(report: Path, records: int) -> bool:
    """Every record's last line is ok or failed for good (nothing left for --resume)."""
    last = last_outcomes(report)
    return all(
        index in last and (last[index]["ok"] is True or last[index]["refused_for_good"] is True)
        for index in range(records)
    )


@dataclass
class Judgement:
    """What the emulator's log says about a series of runs, against the report."""

    items: int
    applied: int
    lost: list[int]
    duplicates: list[int]
    unflagged: list[int]
    out_of_order: list[str]
    false_positives: int
    missing: list[int]

    def figures(self) -> str:
        """The numbers, one line, for the lead to quote."""
        return (
            f"{self.items} items, {self.applied} applications: {len(self.lost)} lost, "
            f"{len(self.duplicates)} duplicates, {len(self.unflagged)} unflagged, "
            f"{len(self.out_of_order)} sessions out of order, "
            f"{self.false_positives} flagged but applied once (false positives), "
            f"{len(self.missing)} without an outcome"
        )


def judge(emulator: OsviEmulator, items: Sequence[InjectRequest], report: Path) -> Judgement:
    """Hold the emulator's log against each item's last report line (see the module doc)."""
    index_of = {item.context: index for index, item in enumerate(items)}
    count: Counter[int] = Counter()
    first_order: dict[str, list[int]] = defaultdict(list)
    for session in sorted({item.session_id for item in items}):
        for entry in emulator.applied(session):
            index = index_of[entry]
            assert items[index].session_id == session, f"item {index} applied to {session}"
            if not count[index]:
                first_order[session].append(index)
            count[index] += 1
    last = last_outcomes(report)
    lost, unflagged, false_positives = [], [], 0
    for index in range(len(items)):
        line = last.get(index)
        if line is None:
            continue
        flagged = line["possible_duplicate"] is True
        if line["ok"] is True and count[index] == 0:
            lost.append(index)
        if count[index] > 1 and not (
            (line["ok"] is True and flagged)
            or (line["ok"] is False and line["may_have_been_applied"] is True)
        ):
            unflagged.append(index)
        if flagged and count[index] == 1:
            false_positives += 1
    out_of_order = [
        session
        for session, order in first_order.items()
        if any(later < earlier for earlier, later in itertools.pairwise(order))
    ]
    return Judgement(
        items=len(items),
        applied=sum(count.values()),
        lost=lost,
        duplicates=sorted(index for index, n in count.items() if n > 1),
        unflagged=unflagged,
        out_of_order=out_of_order,
        false_positives=false_positives,
        missing=[index for index in range(len(items)) if index not in last],
    )


STOP_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
"""The exit code of a graceful stop by each signal."""
