"""The private broker does what the worker relies on (../shared/brokers.md), and its skip rule.

Each test declares and deletes its own exchange and queues, so the session's broker stays clean
for the worker's tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aio_pika
import aiormq.exceptions
import pytest
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
)
from pamqp.common import FieldTable

from tests.brokers.rabbit import REQUIRE_BROKER_VARIABLE, RabbitMQ, require_broker

PARTITIONS = 4
KEYS = 20
MESSAGES = 200
QUORUM_SINGLE_ACTIVE: FieldTable = {"x-queue-type": "quorum", "x-single-active-consumer": True}


@pytest.fixture
async def connection(rabbitmq: RabbitMQ) -> AsyncIterator[AbstractConnection]:
    """A connection to the session's broker."""
    async with await aio_pika.connect(rabbitmq.url) as opened:
        yield opened


@pytest.fixture
async def channel(connection: AbstractConnection) -> AbstractChannel:
    """A channel with publisher confirms (each publish waits for the broker's ack)."""
    return await connection.channel(publisher_confirms=True)


async def drain(connection: AbstractConnection, name: str) -> list[object]:
    """The JSON bodies of every message now in queue `name`, in delivery order, each acked.

    A consumer, not basic.get: quorum queues with single-active-consumer refuse basic.get.
    """
    channel = await connection.channel()
    queue = await channel.declare_queue(name, passive=True)
    expected = queue.declaration_result.message_count
    assert expected is not None
    bodies: list[object] = []
    complete = asyncio.Event()

    async def on_message(message: AbstractIncomingMessage) -> None:
        bodies.append(json.loads(message.body))
        await message.ack()
        if len(bodies) == expected:
            complete.set()

    if expected:
        await queue.consume(on_message)
        await asyncio.wait_for(complete.wait(), timeout=10)
    await channel.close()
    return bodies


def persistent(body: object) -> aio_pika.Message:
    """A persistent JSON message, as the worker's publisher sends them."""
    return aio_pika.Message(
        json.dumps(body).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
    )


async def test_consistent_hash_keeps_each_key_on_one_quorum_queue_in_order(
    connection: AbstractConnection, channel: AbstractChannel
) -> None:
    """200 confirmed messages over 20 keys: each key's messages land on one queue, in order."""
    exchange = await channel.declare_exchange("smoke.hash", "x-consistent-hash", durable=True)
    queues = []
    for index in range(PARTITIONS):
        queue = await channel.declare_queue(
            f"smoke.hash.p{index}", durable=True, arguments=QUORUM_SINGLE_ACTIVE
        )
        await queue.bind(exchange, routing_key="1")
        queues.append(queue)
    for sequence in range(MESSAGES):
        key = f"session-{sequence % KEYS}"
        confirmation = await exchange.publish(
            persistent({"key": key, "sequence": sequence}), routing_key=key
        )
        assert isinstance(confirmation, aiormq.spec.Basic.Ack)

    seen: dict[str, list[tuple[int, int]]] = defaultdict(list)  # key -> (queue, sequence)
    for index, queue in enumerate(queues):
        for body in await drain(connection, queue.name):
            assert isinstance(body, dict)
            seen[body["key"]].append((index, body["sequence"]))
        await queue.delete(if_unused=False, if_empty=False)
    await exchange.delete()

    assert sum(len(entries) for entries in seen.values()) == MESSAGES
    assert len(seen) == KEYS
    for key, entries in seen.items():
        assert len({index for index, _ in entries}) == 1, key
        sequences = [sequence for _, sequence in entries]
        assert sequences == sorted(sequences) == list(range(int(key[8:]), MESSAGES, KEYS)), key
    assert len({entries[0][0] for entries in seen.values()}) > 1  # the hash spreads keys


async def test_single_active_consumer_hands_over_when_its_channel_closes(
    rabbitmq: RabbitMQ, channel: AbstractChannel
) -> None:
    """Of two consumers on a quorum single-active queue only the first gets deliveries, until
    its channel closes; then the standby gets the rest."""
    queue = await channel.declare_queue(
        "smoke.single", durable=True, arguments=QUORUM_SINGLE_ACTIVE
    )
    received: dict[str, list[int]] = {"first": [], "standby": []}
    done = asyncio.Event()

    def consumer(name: str) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def on_message(message: AbstractIncomingMessage) -> None:
            received[name].append(json.loads(message.body))
            await message.ack()
            if len(received["first"]) + len(received["standby"]) in {5, 10}:
                done.set()

        return on_message

    async with await aio_pika.connect(rabbitmq.url) as connection:
        first = await connection.channel()
        await (await first.get_queue("smoke.single")).consume(consumer("first"))
        standby = await connection.channel()
        await (await standby.get_queue("smoke.single")).consume(consumer("standby"))
        for number in range(5):
            await channel.default_exchange.publish(persistent(number), routing_key="smoke.single")
        await asyncio.wait_for(done.wait(), timeout=10)
        done.clear()
        await first.close()  # no basic.cancel first, as the worker stops
        for number in range(5, 10):
            await channel.default_exchange.publish(persistent(number), routing_key="smoke.single")
        await asyncio.wait_for(done.wait(), timeout=10)
        await standby.close()
    await queue.delete(if_unused=False, if_empty=False)

    assert received == {"first": [0, 1, 2, 3, 4], "standby": [5, 6, 7, 8, 9]}


async def test_restart_keeps_durable_queues_and_persistent_messages(rabbitmq: RabbitMQ) -> None:
    """stop() ends every broker process and refuses AMQP; start() brings the queue back with
    its messages, in order."""
    async with await aio_pika.connect(rabbitmq.url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue("smoke.restart", durable=True, arguments=QUORUM_SINGLE_ACTIVE)
        for number in range(10):
            await channel.default_exchange.publish(persistent(number), routing_key="smoke.restart")
    old_pid = rabbitmq.pid

    await asyncio.to_thread(rabbitmq.stop)
    with pytest.raises(ProcessLookupError):
        os.killpg(old_pid, 0)  # signal 0 only asks whether any process of the group lives
    with pytest.raises(aiormq.exceptions.AMQPConnectionError):
        await aio_pika.connect(rabbitmq.url)
    await asyncio.to_thread(rabbitmq.start)

    assert rabbitmq.pid != old_pid
    async with await aio_pika.connect(rabbitmq.url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            "smoke.restart", durable=True, arguments=QUORUM_SINGLE_ACTIVE
        )
        bodies = await drain(connection, "smoke.restart")
        await queue.delete(if_unused=False, if_empty=False)
    assert bodies == list(range(10))


def test_missing_broker_skips_the_test() -> None:
    """Without the rabbitmq-server binary a broker test is skipped, naming the install command."""
    with pytest.raises(pytest.skip.Exception, match=r"apt-get install .* rabbitmq-server"):
        require_broker(Path("/nonexistent/rabbitmq-server"), {REQUIRE_BROKER_VARIABLE: "0"})


def test_missing_broker_fails_the_test_when_required() -> None:
    """With OSVI_REQUIRE_BROKER=1 a missing binary fails the test instead of skipping it."""
    with pytest.raises(pytest.fail.Exception, match="OSVI_REQUIRE_BROKER=1 requires"):
        require_broker(Path("/nonexistent/rabbitmq-server"), {REQUIRE_BROKER_VARIABLE: "1"})


def test_present_broker_neither_skips_nor_fails(tmp_path: Path) -> None:
    """An installed binary lets the test run, whether or not the broker is required."""
    server = tmp_path / "rabbitmq-server"
    server.touch()
    require_broker(server, {})
    require_broker(server, {REQUIRE_BROKER_VARIABLE: "1"})


def test_a_broker_that_exits_fails_start_with_its_log_tail(tmp_path: Path) -> None:
    """A server that exits at once makes start() raise with its exit code and last log lines,
    and close() stops the private epmd it started (its port refuses connections)."""
    server = tmp_path / "rabbitmq-server"
    server.write_text("#!/bin/sh\necho 'boot failed: no disk' >&2\nexit 3\n")
    server.chmod(0o755)
    broker = RabbitMQ(server, tmp_path / "broker")
    try:
        with pytest.raises(RuntimeError, match=r"exited with code 3[^\n]*\n(.*\n)*boot failed"):
            broker.start()
    finally:
        broker.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", broker.epmd_port), timeout=1).close()
