"""Worker processes killed and stopped mid-run, and the broker restarted: nothing lost, every
session in publish order, every entry applied twice flagged in a report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aio_pika

from osvi_async import InjectRequest
from osvi_async.testing import FaultPlan, OsviEmulator
from osvi_async.worker import DEAD_LETTER_QUEUE, Publisher, partition_queue
from tests.brokers.rabbit import RabbitMQ

PARTITIONS = 4  # the same in every worker test: one broker, one topology per session
ROOT = Path(__file__).resolve().parents[2]


async def _start_worker(
    broker: str, emulator: OsviEmulator, report: Path
) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.worker._worker_process",
        broker, emulator.base_url, emulator.api_token, str(report), str(PARTITIONS),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 30) == b"ready\n"
    return process


def _report_lines(paths: list[Path]) -> list[dict[str, object]]:
    lines = []
    for path in paths:
        if path.exists():
            for raw in path.read_text().splitlines():
                with contextlib.suppress(ValueError):  # a line torn by SIGKILL
                    lines.append(json.loads(raw))
    return lines


def _verify(
    emulator: OsviEmulator, published: dict[str, list[str]], reports: list[Path]
) -> tuple[int, int, int, int]:
    """(lost, order violations, entries applied more than once, of those flagged)."""
    lost = violations = 0
    doubled: set[tuple[str, str]] = set()
    for session_id, entries in published.items():
        applied = list(emulator.applied(session_id))
        first_seen = list(dict.fromkeys(applied))
        lost += len(set(entries) - set(applied))
        violations += first_seen != entries
        for entry, count in Counter(applied).items():
            if count > 1:
                doubled.add((session_id, entry))
    flagged = {
        (str(line["session_id"]), str(line["context"]))
        for line in _report_lines(reports)
        if line["possible_duplicate"]
    }
    return lost, violations, len(doubled), len(doubled & flagged)


async def _until(condition: Callable[[], bool], limit: float = 60.0) -> None:
    """Poll the emulator's state (it has no events to wait on) until `condition` holds."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + limit
    while not condition():
        if loop.time() > ends:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def _wait_applied(emulator: OsviEmulator, published: dict[str, list[str]]) -> None:
    loop = asyncio.get_running_loop()
    ends = loop.time() + 90
    while any(len(set(emulator.applied(s))) < len(entries) for s, entries in published.items()):
        if loop.time() > ends:
            raise AssertionError("not everything was applied in time")
        await asyncio.sleep(0.1)


async def _publish(
    broker: str, emulator: OsviEmulator, sessions: int, per: int
) -> dict[str, list[str]]:
    published = {emulator.create_session(): [] for _ in range(sessions)}
    async with Publisher(broker, partitions=PARTITIONS) as publisher:
        for n in range(per):
            for session_id, entries in published.items():
                entry = f"{session_id[:8]}-{n:03}"
                entries.append(entry)
                await publisher.publish(InjectRequest(session_id, entry))
    return published


async def test_kill_and_stop_workers_mid_run(
    broker: str, osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """5,000 messages over 500 sessions, 3 worker processes: one SIGKILLed mid-run and
    replaced, another SIGTERMed. 0 lost, 0 order violations, every double flagged."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=(0.0, 0.003))
    published = await _publish(broker, osvi_emulator, 500, 10)
    doomed = await _publish_doomed(broker, 20)
    reports = [tmp_path / f"worker{n}.jsonl" for n in range(4)]
    workers = [await _start_worker(broker, osvi_emulator, reports[n]) for n in range(3)]
    total = 5000

    def applied() -> int:
        return sum(len(osvi_emulator.applied(s)) for s in published)

    await _until(lambda: applied() >= total * 0.3)
    workers[0].kill()  # SIGKILL: its unacked messages go back to their queues
    await workers[0].wait()
    workers.append(await _start_worker(broker, osvi_emulator, reports[3]))
    await _until(lambda: applied() >= total * 0.6)
    workers[1].send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(workers[1].wait(), 30) == 0
    await _wait_applied(osvi_emulator, published)
    await _until(lambda: _dead_count(reports) >= len(doomed))
    for worker in (workers[2], workers[3]):
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), 30)
    lost, violations, doubled, flagged = _verify(osvi_emulator, published, reports)
    print(f"lost={lost} order_violations={violations} doubled={doubled} flagged={flagged}")
    assert (lost, violations) == (0, 0)
    assert flagged == doubled
    assert await _take_dead_letters(broker) == doomed  # exactly the permanently failing ones
    await _assert_nothing_left(broker)


async def test_broker_restart_mid_run(
    rabbitmq: RabbitMQ, broker: str, osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """The broker stops and starts again under two workers: they reconnect, 0 lost, order
    kept, every double flagged."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=(0.0, 0.003))
    published = await _publish(broker, osvi_emulator, 100, 10)
    reports = [tmp_path / f"worker{n}.jsonl" for n in range(2)]
    workers = [await _start_worker(broker, osvi_emulator, report) for report in reports]
    await _until(lambda: sum(len(osvi_emulator.applied(s)) for s in published) >= 300)
    await asyncio.to_thread(rabbitmq.stop)
    await asyncio.to_thread(rabbitmq.start)
    await _wait_applied(osvi_emulator, published)
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), 30)
    lost, violations, doubled, flagged = _verify(osvi_emulator, published, reports)
    print(f"lost={lost} order_violations={violations} doubled={doubled} flagged={flagged}")
    assert (lost, violations) == (0, 0)
    assert flagged == doubled
    await _assert_nothing_left(broker)


async def _publish_doomed(broker: str, count: int) -> set[str]:
    """Messages for sessions that do not exist: a 404 for each, permanently."""
    doomed = set()
    async with Publisher(broker, partitions=PARTITIONS) as publisher:
        for n in range(count):
            session_id = f"00000000-0000-4000-8000-{n:012}"
            doomed.add(f"doomed-{n}")
            await publisher.publish(InjectRequest(session_id, f"doomed-{n}"))
    return doomed


def _dead_count(reports: list[Path]) -> int:
    return sum(1 for line in _report_lines(reports) if line["error"] == "NotFoundError")


async def _take_dead_letters(broker: str) -> set[str]:
    """The contexts in the dead-letter queue, which is emptied."""
    contexts = set()
    connection = await aio_pika.connect(broker)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(DEAD_LETTER_QUEUE)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            contexts.add(json.loads(message.body)["context"])
    return contexts


async def _assert_nothing_left(broker: str) -> None:
    connection = await aio_pika.connect(broker)
    async with connection:
        channel = await connection.channel()
        for index in range(PARTITIONS):
            queue = await channel.declare_queue(partition_queue(index), passive=True)
            assert queue.declaration_result.message_count == 0
        dead = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
        assert dead.declaration_result.message_count == 0
