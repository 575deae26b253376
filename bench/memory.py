"""Memory of long bulk runs: does peak RSS stay bounded and flat as the input grows?

    python bench/memory.py                  # full: 10,000,000 items (a) + 1,000,000 lines (b)
    python bench/memory.py --quick          # 500,000 items + 100,000 lines, a few minutes

(a) `inject_many` over a generator of `--items` (session_id, context) tuples at concurrency 256
    against nginx; the worker process reads its own /proc/<pid>/status (VmHWM = peak RSS so
    far, VmRSS = now) when the outcomes it has counted reach 1%, 10%, 25%, 50%, 75%, 100%.
(b) `osvi-async bulk FILE --concurrency 256 --report REPORT` over a `--lines`-line JSON Lines
    file, token and URL from OSVI_API_TOKEN / OSVI_BASE_URL; this script polls the report's
    line count (one line per finished item) and reads the CLI's /proc/<pid>/status at the same
    points, and takes the final peak from wait4() as the process ends.

nginx runs on core 0 and the measured process on core 1. Targets: peak RSS <= 100 MB, and flat:
VmHWM at 100% within 10% of VmHWM at 10%. Raw figures go to bench/results/memory-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from clients import CONTEXT, SYNTHETIC_SESSION_IDS, TOKEN
from servers import Nginx, pin, read_status_kib, sdk_revision

BENCH: Final = Path(__file__).resolve().parent
MILESTONES: Final = (1, 10, 25, 50, 75, 100)
"""Percent of the run at which RSS is read."""
CONCURRENCY: Final = 256
PEAK_LIMIT_MB: Final = 100.0
FLATNESS_LIMIT: Final = 0.10


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=10_000_000, help="(a): %(default)s")
    parser.add_argument("--lines", type=int, default=1_000_000, help="(b): %(default)s")
    parser.add_argument("--quick", action="store_true", help="--items 500000 --lines 100000")
    parser.add_argument("--only", choices=["many", "cli"], help="run one of the two")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    # The worker side of (a), started by this script itself.
    parser.add_argument("--worker", nargs=2, metavar=("BASE_URL", "ITEMS"), help=argparse.SUPPRESS)
    return parser


def _marks(total: int) -> dict[int, int]:
    """Outcome count -> percent, for each milestone."""
    return {max(1, total * percent // 100): percent for percent in MILESTONES}


# --- (a) inject_many, in a worker process ---------------------------------------------------


async def _worker(base_url: str, total: int) -> None:
    from osvi_async import OsviClient

    marks = _marks(total)
    ids, pool = SYNTHETIC_SESSION_IDS, len(SYNTHETIC_SESSION_IDS)
    done = failed = 0
    started = time.perf_counter()
    async with OsviClient(TOKEN, base_url=base_url, max_connections=CONCURRENCY) as client:
        items = ((ids[n % pool], CONTEXT) for n in range(total))
        async with client.inject_many(items, concurrency=CONCURRENCY) as run:
            async for outcome in run:
                done += 1
                if not outcome.ok:
                    failed += 1
                    if failed <= 5:
                        print(json.dumps({"error": repr(outcome.error)}), flush=True)
                if done in marks:
                    status = read_status_kib(os.getpid())
                    sample = {"percent": marks[done], "done": done, "failed": failed}
                    sample |= {"seconds": round(time.perf_counter() - started, 1), **status}
                    print(json.dumps(sample), flush=True)
        summary = run.summary
    print(json.dumps({"summary": repr(summary)}), flush=True)


def run_many(base_url: str, items: int, cpu: int | None) -> dict[str, Any]:
    """(a): the worker's samples and its exit."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", base_url, str(items)]
    started = time.perf_counter()
    process = subprocess.Popen(pin(command, cpu), stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    samples, notes = [], []
    for line in process.stdout:
        entry = json.loads(line)
        if "percent" in entry:
            samples.append(entry)
            print(
                f"  (a) {entry['percent']:>3}%  {entry['done']:>10,} items  "
                f"{entry['seconds']:>7.1f} s  VmHWM {entry['VmHWM'] / 1024:6.1f} MB  "
                f"VmRSS {entry['VmRSS'] / 1024:6.1f} MB",
                flush=True,
            )
        else:
            notes.append(entry)
    _, status, usage = os.wait4(process.pid, 0)
    return {
        "what": f"inject_many, generator of {items:,} items, concurrency {CONCURRENCY}, nginx",
        "items": items,
        "seconds": round(time.perf_counter() - started, 1),
        "exit_status": os.waitstatus_to_exitcode(status),
        "samples": samples,
        "final_maxrss_kib": usage.ru_maxrss,
        "notes": notes,
    }


# --- (b) osvi-async bulk --------------------------------------------------------------------


def _write_input(path: Path, lines: int) -> None:
    ids, pool = SYNTHETIC_SESSION_IDS, len(SYNTHETIC_SESSION_IDS)
    with path.open("w", encoding="utf-8") as stream:
        for n in range(lines):
            stream.write(json.dumps({"session_id": ids[n % pool], "context": CONTEXT}) + "\n")


class _LineCounter:
    """Counts the lines of a file that another process appends to, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self.lines = 0

    def poll(self) -> int:
        if not self._path.exists():
            return 0
        with self._path.open("rb") as stream:
            stream.seek(self._offset)
            chunk = stream.read()
        # Only whole lines count; a line being written is counted on the next poll.
        whole = chunk.rfind(b"\n") + 1
        self.lines += chunk.count(b"\n", 0, whole)
        self._offset += whole
        return self.lines


def run_cli(base_url: str, lines: int, cpu: int | None, workdir: Path) -> dict[str, Any]:
    """(b): the CLI's RSS, read from outside at the milestones."""
    source, report = workdir / "input.jsonl", workdir / "report.jsonl"
    _write_input(source, lines)
    cli = shutil.which("osvi-async") or str(Path(sys.executable).parent / "osvi-async")
    command = [cli, "bulk", str(source), "--concurrency", str(CONCURRENCY), "--report", str(report)]
    env = dict(os.environ, OSVI_API_TOKEN=TOKEN, OSVI_BASE_URL=base_url)
    marks = sorted(_marks(lines).items())
    counter = _LineCounter(report)
    samples = []
    started = time.perf_counter()
    with (workdir / "cli.out").open("w") as output:
        process = subprocess.Popen(pin(command, cpu), stdout=output, stderr=output, env=env)
        while True:
            # wait4 rather than Popen.poll, so the exit brings the process's peak RSS along.
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                break
            done = counter.poll()
            while marks and done >= marks[0][0]:
                _, percent = marks.pop(0)
                try:
                    status_kib = read_status_kib(process.pid)
                except (OSError, KeyError):
                    break  # it is exiting; wait4 gives its final peak
                entry = {"percent": percent, "done": done, **status_kib}
                entry["seconds"] = round(time.perf_counter() - started, 1)
                samples.append(entry)
                hwm, rss = status_kib["VmHWM"] / 1024, status_kib["VmRSS"] / 1024
                print(
                    f"  (b) {percent:>3}%  {done:>10,} lines  {entry['seconds']:>7.1f} s  "
                    f"VmHWM {hwm:6.1f} MB  VmRSS {rss:6.1f} MB",
                    flush=True,
                )
            time.sleep(0.02)
    seconds = round(time.perf_counter() - started, 1)
    final = counter.poll()
    tail = (workdir / "cli.out").read_text(errors="replace").strip().splitlines()[-3:]
    return {
        "what": f"osvi-async bulk, {lines:,}-line JSONL, concurrency {CONCURRENCY}, nginx",
        "lines": lines,
        "report_lines": final,
        "seconds": seconds,
        "exit_status": process.returncode,
        "samples": samples,
        "final_maxrss_kib": usage.ru_maxrss,
        "cli_output_tail": tail,
    }


# --- summary --------------------------------------------------------------------------------


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    """Peak (MB), growth from 10% to 100% of VmHWM, and whether each target is met."""
    by_percent = {sample["percent"]: sample for sample in result["samples"]}
    final_kib = max([result.get("final_maxrss_kib") or 0] + [s["VmHWM"] for s in result["samples"]])
    peak_mb = final_kib / 1024
    at_10 = by_percent.get(10, {}).get("VmHWM")
    growth = final_kib / at_10 - 1 if at_10 else None
    return {
        "peak_mb": round(peak_mb, 1),
        "growth_10_to_100": round(growth, 4) if growth is not None else None,
        "peak_met": peak_mb <= PEAK_LIMIT_MB,
        "flat_met": growth is not None and growth <= FLATNESS_LIMIT,
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| run | items | time | items/s | VmHWM at 10% / 50% / 100% (MB) "
        "| VmRSS at 10% / 50% / 100% (MB) | 100% vs 10% | peak <= 100 MB | flat (<= +10%) |",
        "|---|---:|---:|---:|---|---|---:|---|---|",
    ]
    for result in results.values():
        by_percent = {sample["percent"]: sample for sample in result["samples"]}
        judged = result["verdict"]
        hwm = [by_percent.get(p, {}).get("VmHWM") for p in (10, 50)] + [judged["peak_mb"] * 1024]
        rss = [by_percent.get(p, {}).get("VmRSS") for p in (10, 50, 100)]
        count = result.get("items") or result.get("lines") or 0
        growth = judged["growth_10_to_100"]
        lines.append(
            f"| {result['what']} | {count:,} | {result['seconds'] / 60:.1f} min | "
            f"{count / result['seconds']:,.0f} | {_mb(hwm)} | {_mb(rss)} | "
            f"{'n/a' if growth is None else f'{growth:+.1%}'} | "
            f"{'met' if judged['peak_met'] else 'NOT met'} | "
            f"{'met' if judged['flat_met'] else 'NOT met'} |"
        )
    return "\n".join(lines)


def _mb(values: list[float | None]) -> str:
    return " / ".join("n/a" if v is None else f"{v / 1024:.1f}" for v in values)


def main() -> None:
    args = _parser().parse_args()
    if args.worker:
        asyncio.run(_worker(args.worker[0], int(args.worker[1])))
        return
    if args.quick:
        args.items, args.lines = 500_000, 100_000
    started = time.time()
    revision = sdk_revision()
    results: dict[str, dict[str, Any]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="osvi-bench-memory-"))
    try:
        with Nginx(cpu=args.server_cpu) as server:
            if args.only in (None, "many"):
                print(f"(a) inject_many over {args.items:,} items ...", flush=True)
                results["many"] = run_many(server.base_url, args.items, args.client_cpu)
            if args.only in (None, "cli"):
                print(f"(b) osvi-async bulk over {args.lines:,} lines ...", flush=True)
                results["cli"] = run_cli(server.base_url, args.lines, args.client_cpu, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for result in results.values():
        result["verdict"] = verdict(result)
    text = table(results)
    command = " ".join(["python bench/memory.py", *sys.argv[1:]])
    summary = {
        "command": command,
        "duration_seconds": round(time.time() - started, 1),
        "sdk_revision": revision,
        "sdk_revision_after": sdk_revision(),
        "loadavg_after": os.getloadavg(),
        "results": results,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"memory-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(summary, indent=1))
    print()
    print(
        f"SDK at {revision['commit']}{' + uncommitted changes' if revision['uncommitted'] else ''}."
    )
    print(f"Command: `{command}`; took {summary['duration_seconds'] / 60:.1f} min.\n")
    print(text)
    for result in results.values():
        if result["exit_status"] != 0:
            print(f"\nNOTE: {result['what']} exited with status {result['exit_status']}")
    print(f"\nraw results: {path}")


if __name__ == "__main__":
    main()
