"""The worker against a real RabbitMQ and the emulator: order per session, dead letters, poison
messages, an outage that outlives the retries, and a stop that returns what it did not apply."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aio_pika

from osvi_async import InjectRequest, OsviClient, RetryPolicy
from osvi_async.testing import FaultPlan, OsviEmulator
from osvi_async.worker import (
    DEAD_LETTER_QUEUE,
    EXCHANGE,
    Publisher,
    Worker,
)

PARTITIONS = 4  # the same in every worker test: one broker, one topology per session
FAST = RetryPolicy(max_retries=2, initial_delay=0.001, max_delay=0.005)


async def _dead_letters(url: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(DEAD_LETTER_QUEUE)
        letters = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            letters.append(message)
        return letters


async def _until(condition: Any, limit: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    ends = loop.time() + limit
    while not condition():
        if loop.time() > ends:
            raise AssertionError("timed out waiting for the worker")
        await asyncio.sleep(0.02)


async def test_messages_land_in_publish_order_per_session(
    broker: str, osvi_emulator: OsviEmulator
) -> None:
    """600 messages over 30 sessions, with latency: every one applied once, in order."""
    sessions = [osvi_emulator.create_session() for _ in range(30)]
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=(0.0, 0.005))
    async with Publisher(broker, partitions=PARTITIONS) as publisher:
        for n in range(20):
            for session_id in sessions:
                await publisher.publish(InjectRequest(session_id, f"{session_id[:8]}-{n:02}"))
    async with (
        OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url) as client,
        Worker(client, broker, partitions=PARTITIONS, prefetch=64, retry=FAST) as worker,
    ):
        await _until(lambda: worker.stats.succeeded == 600)
    for session_id in sessions:
        assert osvi_emulator.applied(session_id) == tuple(
            f"{session_id[:8]}-{n:02}" for n in range(20)
        )
    assert worker.stats.dead_lettered == 0
    assert worker.stats.possible_duplicates == 0


async def test_permanent_failures_and_poison_go_to_dead_letters(
    broker: str, osvi_emulator: OsviEmulator
) -> None:
    """An unknown session (404) and a body that is not an injection are dead-lettered with
    their reason, acked, and the partition goes on."""
    session_id = osvi_emulator.create_session()
    unknown = "00000000-0000-4000-8000-000000000000"
    async with Publisher(broker, partitions=PARTITIONS) as publisher:
        await publisher.publish(InjectRequest(unknown, "lost"))
        await publisher.publish(InjectRequest(session_id, "kept"))
        connection = await aio_pika.connect(broker)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(EXCHANGE)
            await exchange.publish(aio_pika.Message(b"not json"), routing_key=session_id)
    async with (
        OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url) as client,
        Worker(client, broker, partitions=PARTITIONS, retry=FAST) as worker,
    ):
        await _until(lambda: worker.stats.succeeded == 1 and worker.stats.dead_lettered == 2)
    letters = await _dead_letters(broker)
    reasons = sorted(str(letter.headers["x-osvi-reason"]) for letter in letters)
    assert any("the body is not JSON" in reason for reason in reasons)
    not_found = [letter for letter in letters if letter.headers.get("x-osvi-code")]
    assert [letter.headers["x-osvi-code"] for letter in not_found] == ["session_not_found"]
    assert json.loads(not_found[0].body)["session_id"] == unknown
    assert not_found[0].headers["x-osvi-may-have-been-applied"] is False
    assert osvi_emulator.applied(session_id) == ("kept",)


async def test_an_outage_longer_than_the_retries_keeps_order_and_loses_nothing(
    broker: str, osvi_emulator: OsviEmulator
) -> None:
    """The engine is down for a while: cycles end and start again, the messages go back to
    their queues in order, and when it is back everything lands once, in order."""
    sessions = [osvi_emulator.create_session() for _ in range(5)]
    async with Publisher(broker, partitions=PARTITIONS) as publisher:
        for n in range(10):
            for session_id in sessions:
                await publisher.publish(InjectRequest(session_id, f"e{n}"))
    osvi_emulator.fault_plan = FaultPlan(engine_error=1.0)
    async with (
        OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url) as client,
        Worker(client, broker, partitions=PARTITIONS, retry=FAST, restart_delay=0.05) as worker,
    ):
        await _until(lambda: worker.stats.cycles >= 3)
        osvi_emulator.fault_plan = FaultPlan()
        await _until(lambda: worker.stats.succeeded == 50)
    for session_id in sessions:
        assert osvi_emulator.applied(session_id) == tuple(f"e{n}" for n in range(10))
    # Every message came back at least once, and a redelivery is always sent as a resend:
    # whoever had it before (this process or another) may have applied it. So all are flagged.
    assert worker.stats.possible_duplicates == 50


async def test_a_stop_returns_what_it_did_not_apply(
    broker: str, osvi_emulator: OsviEmulator
) -> None:
    """Stopped mid-run, the worker acks only what it applied; a second worker applies the
    rest, in order, and nothing lands twice."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=0.02)
    async with Publisher(broker, partitions=PARTITIONS) as publisher:
        for n in range(40):
            await publisher.publish(InjectRequest(session_id, f"s{n:02}"))
    async with OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url) as client:
        async with Worker(client, broker, partitions=PARTITIONS, retry=FAST) as first:
            await _until(lambda: first.stats.succeeded >= 5)
        assert first.stats.succeeded < 40
        async with Worker(client, broker, partitions=PARTITIONS, retry=FAST) as second:
            await _until(lambda: first.stats.succeeded + second.stats.succeeded == 40)
    assert osvi_emulator.applied(session_id) == tuple(f"s{n:02}" for n in range(40))
