"""Adaptive concurrency (issue 13): does `concurrency="auto"` find a capacity it is not told?

    python bench/adaptive.py                 # the full run (~12 min on 2 cores)
    python bench/adaptive.py --quick         # a smoke test: short runs, fewer settings
    python bench/adaptive.py --capacities 32 --fixed 16,32,64 --repeat 3

Against an API that serves at most N requests at once (the emulator's CapacityModel:
`--service-time` 50 ms, jitter 0.2, N/2 requests may wait, beyond that 429 + Retry-After: 1),
for N in `--capacities` (8, 32, 128; the client is never told N), one `inject_many` run per
setting: every fixed concurrency in `--fixed` (64 is the SDK's default) and `auto` (with
`--max-concurrency`, 256). Then the "capacity halves" scenario: N = 64 drops to 32 at
`--halve-at` (15 s) and comes back at `--restore-at` (30 s), for `auto` and fixed 64, with a
queue of 16 (`--halving-queue-limit`: with 32 = 64 / 2, fixed 64 would still fit in 32 served
+ 32 waiting after the halving and never be refused).

Every run is a fresh pair of processes: the server (bench/adaptive_server.py, core 0) and the
client (bench/adaptive_client.py, core 1), with the SDK's default retry policy, retry budget
and circuit breaker, items round-robin over 2,000 sessions, for `--seconds` (25). Figures:
goodput (successful items/s) over the whole run and after `--steady-from` (10 s); refused
requests as % of all requests the server saw after `--steady-from` (the server's own per-second
timeline); p50/p99 latency of successful items (first attempt leaving -> outcome, retries
included); the auto run's live limit every 100 ms.

Writes bench/results/adaptive-<time>.json (every run, server timelines included), prints the
table and the targets' verdicts, and draws docs/performance-adaptive.png (`--plot`; a --quick
run plots only when --plot is given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import adaptive_report
from servers import pin, sdk_revision

BENCH: Final = Path(__file__).resolve().parent
ROOT: Final = BENCH.parent
Row = dict[str, Any]
_START_TIMEOUT_SECONDS: Final = 30.0


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--capacities", type=_numbers, default=[8, 32, 128], help="8,32,128")
    parser.add_argument(
        "--fixed", type=_numbers, default=[4, 8, 16, 32, 64, 128, 256], help="4,8,...,256"
    )
    parser.add_argument("--max-concurrency", type=int, default=256, help="auto's maximum (256)")
    parser.add_argument("--seconds", type=float, default=25.0, help="length of a run (25)")
    parser.add_argument("--steady-from", type=float, default=10.0, help="steady part from (10)")
    parser.add_argument("--service-time", type=float, default=0.05, help="seconds (0.05)")
    parser.add_argument("--jitter", type=float, default=0.2, help="0.2")
    parser.add_argument("--sessions", type=int, default=2000, help="2000")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions (1)")
    parser.add_argument("--no-halving", action="store_true", help="skip the halving scenario")
    parser.add_argument("--halving-capacity", type=int, default=64, help="64 (halves to 32)")
    parser.add_argument(
        "--halving-queue-limit",
        type=int,
        default=16,
        help="16: half the halved capacity, so fixed 64 meets refusals after the halving",
    )
    parser.add_argument("--halve-at", type=float, default=15.0, help="15")
    parser.add_argument("--restore-at", type=float, default=30.0, help="30")
    parser.add_argument("--halving-seconds", type=float, default=40.0, help="40")
    parser.add_argument(
        "--server-loop", choices=("uvloop", "asyncio"), default="uvloop", help="uvloop"
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="the server's core (0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="the client's core (1)")
    parser.add_argument("--plot", type=Path, default=None, help="docs/performance-adaptive.png")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: N = 8 and 32, fixed 8, 32 and 64, 8 s runs (steady from 3 s), "
        "halving at 6 s and back at 11 s in a 14 s run (options given override these)",
    )
    return parser


def _apply_quick(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--quick's settings, for every option left at its default."""
    quick = {
        "capacities": [8, 32],
        "fixed": [8, 32, 64],
        "seconds": 8.0,
        "steady_from": 3.0,
        "halve_at": 6.0,
        "restore_at": 11.0,
        "halving_seconds": 14.0,
    }
    for name, value in quick.items():
        if getattr(args, name) == parser.get_default(name):
            setattr(args, name, value)


# --- one run -------------------------------------------------------------------------------------


class _Server:
    """bench/adaptive_server.py in its own process: `base_url` once up, `stats()` as it stops."""

    def __init__(
        self, args: argparse.Namespace, capacity: int, queue_limit: int, schedule: str, ids: Path
    ) -> None:
        command = [
            sys.executable,
            str(BENCH / "adaptive_server.py"),
            "--capacity",
            str(capacity),
            "--service-time",
            str(args.service_time),
            "--jitter",
            str(args.jitter),
            "--queue-limit",
            str(queue_limit),
            "--sessions",
            str(args.sessions),
            "--ids",
            str(ids),
            "--loop",
            args.server_loop,
        ]
        if schedule:
            command += ["--schedule", schedule]
        self.process = subprocess.Popen(
            pin(command, args.server_cpu), stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=_START_TIMEOUT_SECONDS)
            raise RuntimeError(f"the server did not start (exit {self.process.returncode})")
        self.base_url: str = json.loads(line)["base_url"]

    def stats(self) -> dict[str, Any]:
        """Stop the server; what it saw (its capacity stats and requests)."""
        self.process.terminate()
        out, _ = self.process.communicate(timeout=30)
        lines = [line for line in out.splitlines() if line.strip()]
        if not lines:
            raise RuntimeError(f"the server printed no figures (exit {self.process.returncode})")
        figures: dict[str, Any] = json.loads(lines[-1])
        return figures

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run_one(
    args: argparse.Namespace,
    *,
    capacity: int,
    concurrency: int | str,
    seconds: float,
    marks: list[float],
    schedule: str = "",
    queue_limit: int | None = None,
) -> Row:
    """One run: a fresh server and a fresh client; the client's figures and the server's."""
    with tempfile.TemporaryDirectory(prefix="osvi-adaptive-") as scratch:
        ids = Path(scratch) / "ids.txt"
        queue = capacity // 2 if queue_limit is None else queue_limit
        server = _Server(args, capacity, queue, schedule, ids)
        try:
            command = [
                sys.executable,
                str(BENCH / "adaptive_client.py"),
                server.base_url,
                str(ids),
                str(concurrency),
                "--seconds",
                str(seconds),
                "--marks",
                ",".join(str(mark) for mark in marks),
            ]
            if concurrency == "auto":
                command += ["--max-concurrency", str(args.max_concurrency)]
            result = subprocess.run(
                pin(command, args.client_cpu),
                capture_output=True,
                text=True,
                check=False,
                timeout=seconds + 120,
            )
            seen = server.stats()
        finally:
            server.kill()
    row: Row = {"capacity": capacity, "concurrency": concurrency, "schedule": schedule}
    row["queue_limit"] = queue
    row["load_1min"] = round(os.getloadavg()[0], 2)  # includes this run's own two processes
    if result.returncode != 0 or not result.stdout.strip():
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        row["failed"] = lines[-1] if lines else f"exit {result.returncode}"
        return row
    row["client"] = json.loads(result.stdout.strip().splitlines()[-1])
    row["server"] = seen
    return row


def _note(row: Row) -> str:
    if "failed" in row:
        return f"failed: {row['failed']}"
    client = row["client"]
    refused = adaptive_report.refused_share(row, client["phases"][-1]["start"])
    steady = client["phases"][-1]
    limit = client["summary"].get("concurrency_limit")
    return (
        f"goodput {client['goodput']:7.1f}/s, steady {steady['goodput']:7.1f}/s, "
        f"refused {100 * refused:5.1f}%, p99 {steady['p99_ms']} ms, limit {limit}, "
        f"cpu server {row['server']['cpu_share']:.2f} client {client['cpu_share']:.2f}"
    )


# --- the benchmark -------------------------------------------------------------------------------


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if args.quick:
        _apply_quick(args, parser)
    settings: list[int | str] = [*args.fixed, "auto"]
    rows: list[Row] = []
    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    summary: dict[str, Any] = {
        "settings": {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items()
        },
        "started": stamp,
        "revision_before": sdk_revision(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "rows": rows,
    }
    for repetition in range(args.repeat):
        for capacity in args.capacities:
            shift = repetition % len(settings)
            for concurrency in settings[shift:] + settings[:shift]:
                row = run_one(
                    args,
                    capacity=capacity,
                    concurrency=concurrency,
                    seconds=args.seconds,
                    marks=[args.steady_from],
                )
                row |= {"scenario": "sweep", "repetition": repetition}
                rows.append(row)
                print(f"N={capacity:<4} c={concurrency!s:<5} {_note(row)}", flush=True)
        if args.no_halving:
            continue
        low = args.halving_capacity // 2
        schedule = f"{args.halve_at}:{low},{args.restore_at}:{args.halving_capacity}"
        marks = [args.steady_from, args.halve_at, args.restore_at]
        for concurrency in ("auto", args.halving_capacity):
            row = run_one(
                args,
                capacity=args.halving_capacity,
                concurrency=concurrency,
                seconds=args.halving_seconds,
                marks=marks,
                schedule=schedule,
                queue_limit=args.halving_queue_limit,
            )
            row |= {"scenario": "halving", "repetition": repetition}
            rows.append(row)
            print(f"halving c={concurrency!s:<5} {_note(row)}", flush=True)
    summary["seconds"] = round(time.time() - started, 1)
    summary["load_after"] = os.getloadavg()
    summary["revision_after"] = sdk_revision()
    summary["report"] = adaptive_report.report(summary)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"adaptive-{stamp}.json"
    path.write_text(json.dumps(summary, indent=1))
    print(summary["report"]["text"])
    print(f"raw figures: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    plot = args.plot
    if plot is None and not args.quick:
        plot = ROOT / "docs" / "performance-adaptive.png"
    if plot is not None and not args.no_plot:
        adaptive_report.plot(summary, plot)
        print(f"plot: {plot}")


if __name__ == "__main__":
    main()
