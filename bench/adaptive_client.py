"""One `inject_many` run against a server with a capacity, for bench/adaptive.py; prints JSON.

Usage: python bench/adaptive_client.py BASE_URL IDS_FILE CONCURRENCY [--max-concurrency N]
           [--seconds S] [--marks 10] [--grace S]

CONCURRENCY is a number or `auto`. The run uses the SDK's defaults for everything else (retry
policy, retry budget, circuit breaker), except `hold_on_failure=False` (see bench/README.md):
items are `(session_id, context)` round-robin over the ids in IDS_FILE, from an endless
generator. After `--seconds` the run is drained (`BulkRun.drain(grace)`); only outcomes that
arrived within `--seconds` count.

Measured, from the moment the run is first iterated (t = 0):
- successes and failures per whole second (by the time their outcome arrived);
- the latency of every successful item: from `on_send` (its first attempt leaving, after any
  wait for a slot) to its outcome, retries and their Retry-After waits included;
- `BulkRun.summary.concurrency_limit` (the live limit) and the successes so far, every 100 ms;
- per phase (the `--marks` cut [0, end) into [0, m1), [m1, m2), ..., [mk, end)): successes,
  goodput, p50 and p99 latency of the items that succeeded in it, and how many needed retries.

Also `cpu_share`: this process's CPU time over the run's wall time (near 1.0: the client's core
limited the rate). Prints one JSON object, then leaves with os._exit(0) (the figures are out).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from clients import CONTEXT, TOKEN

from osvi_async import OsviClient

SAMPLE_SECONDS: Final = 0.1


def _concurrency(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _marks(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("ids", type=Path)
    parser.add_argument("concurrency", type=_concurrency, help="a number or auto")
    parser.add_argument("--max-concurrency", type=int, default=None, help="with auto")
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--marks", type=_marks, default=[10.0], help="phase boundaries, s")
    parser.add_argument("--grace", type=float, default=5.0, help="drain grace, s")
    return parser


def _items(ids: Sequence[str]) -> Iterator[tuple[str, str]]:
    while True:
        for session_id in ids:
            yield session_id, CONTEXT


def _percentile(ordered: Sequence[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _phase(successes: list[tuple[float, float, int]], start: float, end: float) -> dict[str, Any]:
    """Figures of the items that succeeded within [start, end)."""
    inside = [(latency, attempts) for at, latency, attempts in successes if start <= at < end]
    latencies = sorted(latency for latency, _ in inside)
    p50, p99 = _percentile(latencies, 0.50), _percentile(latencies, 0.99)
    return {
        "start": start,
        "end": end,
        "succeeded": len(inside),
        "goodput": round(len(inside) / (end - start), 1),
        "p50_ms": None if p50 is None else round(p50 * 1000, 1),
        "p99_ms": None if p99 is None else round(p99 * 1000, 1),
        "retried": sum(1 for _, attempts in inside if attempts > 1),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    ids = args.ids.read_text().split()
    concurrency = args.concurrency
    most = args.max_concurrency if args.max_concurrency is not None else 256
    connections = most if concurrency == "auto" else int(concurrency)
    sent: dict[int, float] = {}
    clock = time.perf_counter

    def on_send(index: int) -> None:
        sent[index] = clock()

    options: dict[str, Any] = {"concurrency": concurrency, "hold_on_failure": False}
    if concurrency == "auto" and args.max_concurrency is not None:
        options["max_concurrency"] = args.max_concurrency
    successes: list[tuple[float, float, int]] = []  # (outcome at, latency, attempts)
    per_second_ok: collections.Counter[int] = collections.Counter()
    per_second_failed: collections.Counter[int] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    samples: list[list[Any]] = []
    async with OsviClient(TOKEN, base_url=args.base_url, max_connections=connections) as client:
        run = client.inject_many(_items(ids), on_send=on_send, **options)
        started = clock()

        async def sample() -> None:
            while True:
                at = clock() - started
                summary = run.summary
                limit = getattr(summary, "concurrency_limit", None)
                samples.append([round(at, 2), limit, summary.succeeded, run.circuit_state])
                if at >= args.seconds:
                    run.drain(args.grace)
                    return
                await asyncio.sleep(SAMPLE_SECONDS)

        sampler = asyncio.ensure_future(sample())
        cpu = time.process_time()
        async with run:
            async for outcome in run:
                now = clock()
                at = now - started
                began = sent.pop(outcome.index, None)
                if at >= args.seconds:
                    continue
                if outcome.ok:
                    per_second_ok[int(at)] += 1
                    latency = now - began if began is not None else float("nan")
                    successes.append((at, latency, outcome.attempts))
                else:
                    per_second_failed[int(at)] += 1
                    errors[type(outcome.error).__name__] += 1
        await sampler
        summary = run.summary
        cpu_share = (time.process_time() - cpu) / (clock() - started)
    seconds = args.seconds
    bounds = [0.0, *[mark for mark in args.marks if 0 < mark < seconds], seconds]
    whole = int(seconds)
    return {
        "concurrency": concurrency,
        "max_concurrency": args.max_concurrency,
        "seconds": seconds,
        "cpu_share": round(cpu_share, 3),
        "succeeded": len(successes),
        "goodput": round(len(successes) / seconds, 1),
        "whole": _phase(successes, 0.0, seconds),
        "phases": [_phase(successes, a, b) for a, b in itertools.pairwise(bounds)],
        "ok_per_second": [per_second_ok[s] for s in range(whole)],
        "failed_per_second": [per_second_failed[s] for s in range(whole)],
        "errors": dict(errors),
        "samples": samples,
        "summary": {
            name: getattr(summary, name)
            for name in (
                "items",
                "succeeded",
                "failed",
                "retries",
                "retries_refused",
                "possible_duplicates",
                "not_sent",
                "interrupted",
                "held",
                "elapsed",
                "concurrency_limit",
            )
            if hasattr(summary, name)
        },
    }


def main() -> None:
    figures = asyncio.run(_run(_parser().parse_args()))
    print(json.dumps(figures), flush=True)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
