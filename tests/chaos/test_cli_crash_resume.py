"""The real CLI, stopped at random points and resumed to completion, judged by the server's log.

`osvi-async bulk` runs as a subprocess against the emulator (in this process) under mixed
faults, ambiguous ones included, and latency. It is SIGKILLed at random points three times,
then `--resume`d until every record is done or failed for good. The emulator's `applied` log
then says: no item reported ok is missing (0 lost), every item applied twice is flagged in
its last report line (0 unflagged), and every session's items were first applied in input
order. A graceful stop (SIGINT, SIGTERM) with a server that answers within the grace must
double nothing at all.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest

from osvi_async import InjectRequest
from osvi_async.testing import FaultPlan, OsviEmulator
from tests.chaos._cli import (
    STOP_CODES,
    Judgement,
    complete,
    judge,
    run_bulk_cli,
    start_bulk,
    wait_for_outcomes,
    wait_for_stderr,
    write_input,
)
from tests.chaos._harness import injected, mixed_plan, spread_items
from tests.chaos._report import Recorder

SESSIONS = 200
ITEMS = 3000
KILLS = 3
MAX_RESUMES = 8
LATENCY = 0.3
LATENCY_SECONDS = (0.001, 0.02)
CLI_OPTIONS = ("--concurrency", "64", "--timeout", "0.5")
"""A `hang` costs half a second; the CLI's own retry policy (4 attempts) applies."""
GRACEFUL_OPTIONS = ("--concurrency", "64", "--timeout", "2")
"""For the graceful stops, which must double nothing at all: a response slowed past half a
second by a busy machine (the suite runs on every core) would time out after it was applied,
and its retry is a duplicate no stop caused. A `hang` costs 2 s there, a few times a run."""


async def _resume_to_completion(
    emulator: OsviEmulator,
    workdir: Path,
    source: Path,
    report: Path,
    options: tuple[str, ...] = CLI_OPTIONS,
) -> int:
    """Run `--resume` until nothing is left to send; return how many runs it took."""
    for runs in range(1, MAX_RESUMES + 1):
        code, stderr = await run_bulk_cli(
            emulator, workdir, str(source), "--report", str(report), "--resume", *options
        )
        assert code in (0, 1), stderr
        assert "Traceback" not in stderr
        if complete(report, ITEMS):
            return runs
    raise AssertionError(f"not complete after {MAX_RESUMES} resumes")


def _record(
    reliability: Recorder, emulator: OsviEmulator, scenario: str, verdict: Judgement, runs: str
) -> None:
    failures, delayed = injected(emulator)
    reliability.add(
        section=5,
        scenario=scenario,
        items=ITEMS,
        faults=failures,
        latency=delayed,
        requests=emulator.stats.requests_total,
        lost=len(verdict.lost),
        duplicated_flagged=len(verdict.duplicates) - len(verdict.unflagged),
        duplicated_unflagged=len(verdict.unflagged),
        note=f"{runs}: {verdict.figures()}",
        tally={"sessions out of order": len(verdict.out_of_order)},
    )
    print(f"{scenario} ({runs}): {verdict.figures()}")


def _setup(
    emulator: OsviEmulator, tmp_path: Path, tag: str, seed: int
) -> tuple[list[InjectRequest], Path, Path]:
    sessions = [emulator.create_session() for _ in range(SESSIONS)]
    items = spread_items(sessions, ITEMS, tag, seed)
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    write_input(source, items)
    return items, source, report


async def test_sigkill_three_times_then_resume(
    osvi_emulator: OsviEmulator, tmp_path: Path, reliability: Recorder
) -> None:
    """3 SIGKILLs at random points, resumes: 0 lost, 0 unflagged duplicates, 0 out of order."""
    seed = 901
    osvi_emulator.fault_plan, _ = mixed_plan(
        0.10, seed, latency=LATENCY, latency_seconds=LATENCY_SECONDS, retry_after_seconds=0
    )
    items, source, report = _setup(osvi_emulator, tmp_path, "kill", seed)
    rng = random.Random(seed)
    kills = 0
    for run in range(KILLS):
        resume = ("--resume",) if run else ()
        cli = await start_bulk(
            osvi_emulator, tmp_path, str(source), "--report", str(report), *resume, *CLI_OPTIONS
        )
        if await wait_for_outcomes(cli, report, rng.randint(50, 700)):
            cli.send(signal.SIGKILL)
            kills += 1
        await cli.wait()
    resumes = await _resume_to_completion(osvi_emulator, tmp_path, source, report)
    verdict = judge(osvi_emulator, items, report)
    runs = f"{kills} kills, {resumes} resume(s)"
    _record(reliability, osvi_emulator, "CLI: SIGKILL at random points, --resume", verdict, runs)

    assert kills == KILLS
    assert verdict.missing == []
    assert verdict.lost == [], verdict.figures()
    assert verdict.unflagged == [], verdict.figures()
    assert verdict.out_of_order == [], verdict.figures()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_graceful_stop_then_resume_doubles_nothing(
    osvi_emulator: OsviEmulator, tmp_path: Path, reliability: Recorder, signum: int
) -> None:
    """A signal mid-run, twice, then resumes: 0 lost, 0 duplicates at all, 0 out of order."""
    seed = 911 + signum
    # Faults that are certainly not applied (and hangs, which never apply), so any
    # duplicate could only come from the stop and resume themselves.
    osvi_emulator.fault_plan = FaultPlan(
        seed=seed,
        engine_error=0.03,
        unavailable=0.02,
        rate_limited=0.02,
        hang=0.005,
        latency=LATENCY,
        latency_seconds=LATENCY_SECONDS,
        retry_after_seconds=0,
    )
    items, source, report = _setup(osvi_emulator, tmp_path, signal.Signals(signum).name, seed)
    rng = random.Random(seed)
    stops = 0
    for run in range(2):
        resume = ("--resume",) if run else ()
        cli = await start_bulk(
            osvi_emulator, tmp_path, str(source), "--report", str(report), *resume,
            *GRACEFUL_OPTIONS,
        )  # fmt: skip
        if await wait_for_outcomes(cli, report, rng.randint(100, 800)):
            cli.send(signum)
            stops += 1
            assert await wait_for_stderr(cli, "stopping;") or cli.process.returncode is not None
        code = await cli.wait()
        assert code in (STOP_CODES[signum], 0, 1), cli.stderr
        assert "Traceback" not in cli.stderr
    resumes = await _resume_to_completion(osvi_emulator, tmp_path, source, report, GRACEFUL_OPTIONS)
    name = signal.Signals(signum).name
    verdict = judge(osvi_emulator, items, report)
    runs = f"{stops} stops, {resumes} resume(s)"
    _record(reliability, osvi_emulator, f"CLI: {name} (graceful), --resume", verdict, runs)

    assert stops == 2
    assert verdict.missing == []
    assert verdict.lost == [], verdict.figures()
    assert verdict.duplicates == [], verdict.figures()
    assert verdict.out_of_order == [], verdict.figures()
