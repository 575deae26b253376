"""End-to-end throughput of RabbitMQ workers, and their CPU per message against inject_many's.

Starts a private RabbitMQ (as the tests do) and the emulator in this process, publishes N
messages over S sessions, then starts k worker processes and times until every message is
applied; for k = 1, 2, 3. Worker CPU per message is the workers' user+system time (from
/proc) over N. The baseline, measured in the same run, is one `inject_many` process applying
the same N items against the same emulator: its CPU per item.

Usage: python bench/workers.py [--messages 5000] [--sessions 500] [--partitions 8]
Needs rabbitmq-server (apt) and the worker extra.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from osvi_async import InjectRequest, OsviClient  # noqa: E402
from osvi_async.testing import OsviEmulator  # noqa: E402
from osvi_async.worker import Publisher  # noqa: E402
from tests.brokers.rabbit import RABBITMQ_SERVER, RabbitMQ, remove_topology  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def publish(
    broker: str, emulator: OsviEmulator, messages: int, sessions: int, p: int
) -> list[str]:
    ids = [emulator.create_session() for _ in range(sessions)]
    async with Publisher(broker, partitions=p) as publisher:
        for n in range(messages):
            await publisher.publish(InjectRequest(ids[n % sessions], f"m{n}"))
    return ids


async def run_workers(
    broker: str, emulator: OsviEmulator, count: int, args: argparse.Namespace
) -> tuple[float, float]:
    """Seconds to apply everything with `count` workers, and their CPU seconds."""
    await remove_topology(broker)
    ids = await publish(broker, emulator, args.messages, args.sessions, args.partitions)
    target = sum(len(emulator.applied(s)) for s in ids) + args.messages
    report = tempfile.mktemp(suffix=".jsonl")
    started = time.monotonic()
    command = [
        sys.executable, "-m", "tests.worker._worker_process", broker, emulator.base_url,
        emulator.api_token, report, str(args.partitions),
    ]  # fmt: skip
    workers = [
        await asyncio.create_subprocess_exec(*command, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL)
        for _ in range(count)
    ]
    while sum(len(emulator.applied(s)) for s in ids) < target:  # noqa: ASYNC110 - polls
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - started
    cpu = sum(cpu_seconds(worker.pid) for worker in workers)
    for worker in workers:
        worker.terminate()
        await worker.wait()
    return elapsed, cpu


async def inject_many_baseline(emulator: OsviEmulator, args: argparse.Namespace) -> float:
    """CPU seconds per item of one inject_many run over as many items, in a child process
    (so that the emulator's own work is not counted, as for the workers)."""
    ids = [emulator.create_session() for _ in range(args.sessions)]
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", emulator.base_url, emulator.api_token,
        str(args.messages), ",".join(ids),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    output, _ = await child.communicate()
    return float(output)


async def child(base_url: str, token: str, messages: int, ids: list[str]) -> None:
    """The baseline's child: one inject_many run; prints its CPU seconds per item."""
    items = [InjectRequest(ids[n % len(ids)], f"b{n}") for n in range(messages)]
    async with OsviClient(token, base_url=base_url) as client:
        started = time.process_time()
        async with client.inject_many(items, concurrency=64) as run:
            async for _ in run:
                pass
        print((time.process_time() - started) / messages)


async def main(args: argparse.Namespace) -> None:
    if not RABBITMQ_SERVER.exists():
        raise SystemExit(f"needs RabbitMQ: {RABBITMQ_SERVER} is missing")
    with tempfile.TemporaryDirectory() as scratch:
        broker = RabbitMQ(RABBITMQ_SERVER, Path(scratch))
        await asyncio.to_thread(broker.start)
        try:
            async with OsviEmulator() as emulator:
                rows = []
                for count in (1, 2, 3):
                    elapsed, cpu = await run_workers(broker.url, emulator, count, args)
                    rows.append((count, args.messages / elapsed, cpu / args.messages * 1e3))
                baseline = await inject_many_baseline(emulator, args)
        finally:
            await asyncio.to_thread(broker.close)
    print(f"{args.messages} messages over {args.sessions} sessions, {args.partitions} partitions")
    print("| workers | messages/s | worker CPU per message |")
    print("|---:|---:|---:|")
    for count, rate, cpu_ms in rows:
        print(f"| {count} | {rate:,.0f} | {cpu_ms:.2f} ms |")
    print(f"inject_many in one process, same items: {baseline * 1e3:.2f} ms CPU per item")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        asyncio.run(child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].split(",")))
        raise SystemExit
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=8)
    asyncio.run(main(parser.parse_args()))
