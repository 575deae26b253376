"""Run one client in this process for a warm-up and then a fixed window; print its figures as JSON.

The drivers (bench/run.py, bench/harness.py) start one such process per measurement, pinned to
its own core, so one client's pool, garbage and imports never touch another's figures.

Usage: python bench/run_client.py CLIENT BASE_URL CONCURRENCY [--ids FILE | --session-id ID]
           [--seconds S] [--warmup-calls N] [--warmup-min S] [--warmup-max S] [--requests N]
           [--no-orjson] [--loop {asyncio,uvloop}]

One client instance does everything: the warm-up (imports, connections, allocator) lasts until
`--warmup-calls` calls are done (default max(200, 2 x concurrency)) and at least `--warmup-min`
seconds, but at most `--warmup-max` seconds after the minimum; then the window of `--seconds`
starts. Calls that complete within the window are counted; calls still in flight when it ends
are cancelled. `--requests` ends the window early once that many calls were counted.

`--session-id` sends every call to that one session. `--no-orjson` makes `import orjson` fail
in this process before anything imports osvi_async, so the SDK runs as on a default install
(stdlib json). `--loop uvloop` runs the client on uvloop.

Prints one JSON object: client, concurrency, requests (completed in the window), seconds,
req_per_s, cpu_us_per_req (user+system CPU time of this process, all its threads, in the
window, per request), rss_mb (this process's peak RSS, warm-up included), warmup_calls,
warmup_seconds, loop (the running loop's class) and json (the SDK's JSON backend, when the SDK
was imported). Then it leaves with os._exit(0), after flushing: a native extension's threads
(pyreqwest) can abort the interpreter's own shutdown, and the figures are already out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from clients import CLIENTS, SYNTHETIC_SESSION_IDS, Runner, Tally

_POLL_SECONDS: Final = 0.005


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("base_url")
    parser.add_argument("concurrency", type=int)
    ids = parser.add_mutually_exclusive_group()
    ids.add_argument("--ids", type=Path, help="session ids, one a line (default: synthetic)")
    ids.add_argument("--session-id", help="send every call to this one session")
    parser.add_argument("--seconds", type=float, default=2.5, help="measured window (2.5)")
    parser.add_argument("--requests", type=int, default=None, help="end the window at N calls")
    parser.add_argument("--warmup-calls", type=int, default=None)
    parser.add_argument("--warmup-min", type=float, default=0.0)
    parser.add_argument("--warmup-max", type=float, default=2.0)
    parser.add_argument(
        "--no-orjson", action="store_true", help="block orjson: the SDK's default install"
    )
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    return parser


async def _until(tally: Tally, calls: int, deadline: float, task: asyncio.Task[None]) -> None:
    """Wait until `calls` are done, the deadline passes, or the run ends."""
    # Polling, not an Event, keeps the clients' hot paths free of benchmark code.
    while tally.done < calls and time.perf_counter() < deadline and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(_POLL_SECONDS)


async def measure(
    runner: Runner, base_url: str, ids: Sequence[str], concurrency: int, args: argparse.Namespace
) -> dict[str, float | int]:
    """Warm up, then count the calls that complete within the window."""
    warmup_calls = args.warmup_calls
    if warmup_calls is None:
        warmup_calls = max(200, 2 * concurrency)
    tally = Tally()
    started = time.perf_counter()
    task = asyncio.ensure_future(runner(base_url, ids, None, concurrency, tally))
    try:
        await _until(tally, 2**62, started + args.warmup_min, task)
        await _until(tally, warmup_calls, started + args.warmup_min + args.warmup_max, task)
        warm_done, window_start, cpu_start = tally.done, time.perf_counter(), time.process_time()
        limit = warm_done + args.requests if args.requests else 2**62
        await _until(tally, limit, window_start + args.seconds, task)
        done, window_end, cpu_end = tally.done, time.perf_counter(), time.process_time()
        if task.done():
            task.result()  # the client failed: so does the measurement
            raise RuntimeError("the client stopped before the window ended")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    requests = done - warm_done
    seconds = window_end - window_start
    return {
        "requests": requests,
        "seconds": round(seconds, 4),
        "req_per_s": round(requests / seconds, 1),
        "cpu_us_per_req": round((cpu_end - cpu_start) / max(requests, 1) * 1e6, 1),
        "warmup_calls": warm_done,
        "warmup_seconds": round(window_start - started, 3),
    }


def _session_ids(args: argparse.Namespace) -> list[str]:
    if args.session_id:
        return [args.session_id]
    return args.ids.read_text().split() if args.ids else SYNTHETIC_SESSION_IDS


async def _measure_here(
    runner: Runner, base_url: str, ids: Sequence[str], concurrency: int, args: argparse.Namespace
) -> dict[str, Any]:
    loop = type(asyncio.get_running_loop())
    figures: dict[str, Any] = dict(await measure(runner, base_url, ids, concurrency, args))
    figures["loop"] = f"{loop.__module__}.{loop.__qualname__}"
    json_module = sys.modules.get("osvi_async._json")
    if json_module is not None:
        figures["json"] = getattr(json_module, "BACKEND", "unknown")
    return figures


def main() -> None:
    args = _parser().parse_args()
    if args.no_orjson:
        # None in sys.modules makes `import orjson` raise ImportError, as if not installed.
        sys.modules["orjson"] = None  # type: ignore[assignment]
    measurement = _measure_here(
        CLIENTS[args.client], args.base_url, _session_ids(args), args.concurrency, args
    )
    if args.loop == "uvloop":
        import uvloop

        figures = uvloop.run(measurement)
    else:
        figures = asyncio.run(measurement)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"client": args.client, "concurrency": args.concurrency, **figures}
    print(json.dumps(result | {"rss_mb": round(rss_mb, 1)}), flush=True)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
