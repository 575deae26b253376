"""The API with a capacity, in its own process, for bench/adaptive.py.

Usage: python bench/adaptive_server.py --capacity N [--service-time S] [--jitter F]
           [--queue-limit Q] [--schedule T:N,T:N] [--sessions 2000] [--ids FILE]

Runs `OsviEmulator(capacity=CapacityModel(...))` on 127.0.0.1 (a free port), opens
`--sessions` sessions directly in the emulator (no HTTP: the capacity model gates only
inject_context, and its clock starts at its first request, so setting up costs the run nothing)
and writes their ids to `--ids`, one a line. Then it prints one line
`{"base_url": ..., "sessions": N}` and serves until SIGTERM or SIGINT; before it stops it prints
one more JSON line: `emulator.capacity_stats()` (its per-second timeline included), the
inject_context requests it received and `cpu_share`, its CPU time over wall time from ready to
stop (near 1.0: the server's core, not the model, limited the rate).

`--loop uvloop` (the default) serves on uvloop: the server should not be what limits the rate
(at N = 128 and 50 ms the model serves up to 2,560 requests/s). The token is bench/clients.py's
TOKEN. Refusals are 429 with `Retry-After: 1` (the model's
defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import attrs
from clients import TOKEN

from osvi_async.testing import CapacityModel, OsviEmulator


def _schedule(text: str) -> tuple[tuple[float, int], ...]:
    pairs = (part.split(":") for part in text.split(",") if part.strip())
    return tuple((float(at), int(limit)) for at, limit in pairs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, required=True, help="requests served at once")
    parser.add_argument("--service-time", type=float, default=0.05, help="seconds (0.05)")
    parser.add_argument("--jitter", type=float, default=0.2, help="0.2")
    parser.add_argument("--queue-limit", type=int, default=None, help="default capacity // 2")
    parser.add_argument("--schedule", type=_schedule, default=(), help="T:N,T:N")
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--ids", type=Path, required=True, help="write the session ids here")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    return parser


def _plain(value: Any) -> Any:
    """attrs values (CapacityStats, CapacitySecond) as JSON-ready dicts and lists."""
    if attrs.has(type(value)):
        return {key: _plain(item) for key, item in attrs.asdict(value, recurse=False).items()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, frozenset | set):
        return sorted(value)
    return value


async def _serve(args: argparse.Namespace) -> None:
    queue_limit = args.capacity // 2 if args.queue_limit is None else args.queue_limit
    model = CapacityModel(
        limit=args.capacity,
        service_time=args.service_time,
        jitter=args.jitter,
        queue_limit=queue_limit,
        schedule=args.schedule,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with OsviEmulator(api_token=TOKEN, capacity=model) as emulator:
        ids = [
            emulator.create_session(agent_uuid="bench-agent", customer_id=f"bench-customer-{n}")
            for n in range(args.sessions)
        ]
        args.ids.write_text("\n".join(ids) + "\n")
        print(json.dumps({"base_url": emulator.base_url, "sessions": len(ids)}), flush=True)
        wall, cpu = time.perf_counter(), time.process_time()
        await stop.wait()
        stats = emulator.capacity_stats()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        figures = {
            "cpu_share": round(cpu / wall, 3),
            "capacity_stats": _plain(stats),
            "inject_requests": emulator.requests("inject_context"),
            "model": _plain(model),
        }
        print(json.dumps(figures), flush=True)


def main() -> None:
    args = _parser().parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(_serve(args))
    else:
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
