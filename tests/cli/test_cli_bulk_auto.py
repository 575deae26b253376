"""`osvi-async bulk --concurrency auto`: a real subprocess against the capacity model.

The limit must show where a user looks (the report's outcome lines, the summary line), stay
within `--max-concurrency` at the API, and a stop must keep every bulk promise.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from osvi_async import InjectRequest
from osvi_async.testing import CapacityModel, OsviEmulator
from tests.chaos._cli import (
    judge,
    report_entries,
    run_bulk_cli,
    start_bulk,
    wait_for_outcomes,
    write_input,
)
from tests.cli.test_cli import assert_clean, osvi


def _input(emulator: OsviEmulator, path: Path, count: int) -> list[InjectRequest]:
    sessions = [emulator.create_session() for _ in range(100)]
    items = [InjectRequest(sessions[i % 100], f"item {i}") for i in range(count)]
    write_input(path, items)
    return items


async def test_auto_run_reports_its_limit_and_stays_under_the_maximum(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """Every outcome line carries the live limit (1..max), the summary the last one, and the
    API never sees more than --max-concurrency at once."""
    osvi_emulator.capacity = CapacityModel(limit=8, service_time=0.01, queue_limit=4, retry_after=0)
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    items = _input(osvi_emulator, source, 600)
    code, err = await run_bulk_cli(
        osvi_emulator,
        tmp_path,
        str(source),
        "--concurrency",
        "auto",
        "--max-concurrency",
        "20",
        "--report",
        str(report),
    )
    assert code == 0, err
    outcomes = [entry for entry in report_entries(report) if "ok" in entry]
    limits = [entry["concurrency_limit"] for entry in outcomes]
    assert len(limits) == 600
    assert all(isinstance(limit, int) and 1 <= limit <= 20 for limit in limits)
    assert f"concurrency limit {limits[-1]} at the end" in err.strip().splitlines()[-1]
    assert osvi_emulator.capacity_stats().peak_concurrent <= 20
    verdict = judge(osvi_emulator, items, report)
    assert (verdict.lost, verdict.unflagged, verdict.out_of_order, verdict.missing) == (
        [],
        [],
        [],
        [],
    ), verdict.figures()
    assert verdict.applied == 600


async def test_sigterm_stops_an_auto_run_and_resume_finishes_it(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """SIGTERM mid-run: 143, nothing lost or unflagged; --resume sends the rest, in order."""
    osvi_emulator.capacity = CapacityModel(limit=4, service_time=0.02, queue_limit=50)
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    items = _input(osvi_emulator, source, 400)
    args = [str(source), "--concurrency", "auto", "--report", str(report)]
    cli = await start_bulk(osvi_emulator, tmp_path, *args)
    assert await wait_for_outcomes(cli, report, 40)
    cli.send(signal.SIGTERM)
    assert await cli.wait() == 143, cli.stderr
    stopped = [entry for entry in report_entries(report) if entry.get("ok") is False]
    assert stopped  # the stop left items for --resume
    code, err = await run_bulk_cli(osvi_emulator, tmp_path, *args, "--resume")
    assert code == 0, err
    verdict = judge(osvi_emulator, items, report)
    assert (verdict.lost, verdict.unflagged, verdict.out_of_order, verdict.missing) == (
        [],
        [],
        [],
        [],
    ), verdict.figures()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--max-concurrency", "8"], ["--max-concurrency goes with --concurrency auto"]),
        (["--concurrency", "fast"], ["'fast' is neither a whole number nor auto"]),
        (["--concurrency", "auto5"], ["'auto5' is neither a whole number nor auto"]),
        (["--concurrency", "auto", "--max-concurrency", "0"], ["--max-concurrency", "0"]),
    ],
)
async def test_bad_concurrency_options_are_one_line_and_exit_2(
    osvi_emulator: OsviEmulator, tmp_path: Path, args: list[str], words: list[str]
) -> None:
    """Refused before anything is sent: exit 2, one line on stderr, no traceback."""
    source = tmp_path / "items.jsonl"
    _input(osvi_emulator, source, 3)
    result = await osvi("bulk", str(source), *args, emulator=osvi_emulator)
    assert result.code == 2, result.err
    [line] = result.err.strip().splitlines()
    assert all(word in line for word in words), line
    assert osvi_emulator.stats.requests_total == 0
    assert_clean(result, osvi_emulator.api_token)
