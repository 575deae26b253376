"""The RabbitMQ layout injections travel through; declared the same way by every publisher and
worker, so whichever starts first creates it and the others find it as is.

One durable consistent-hash exchange spreads messages over P partition queues by their
ordering key (a session, or a customer and agent), so one key's messages always reach the same
queue, in publish order. Each queue is a quorum queue with a single active consumer: the broker
itself gives each partition to one worker at a time and hands it to a standby when that worker
goes away, so we write no lease code. (Classic queues with a single active consumer crash
RabbitMQ 3.10: docs/workers.md.) Messages that can never be applied go to a dead-letter queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import aio_pika

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

EXCHANGE: Final = "osvi.inject"
DEAD_LETTER_EXCHANGE: Final = "osvi.inject.dlx"
DEAD_LETTER_QUEUE: Final = "osvi.inject.dead"
DEFAULT_PARTITIONS: Final = 16
DELIVERY_LIMIT: Final = 1000
"""A crash backstop only (a message that kills every worker that takes it): every return raises
the delivery count, even of prefetched messages never started, and a worker returns its
unacked messages at each failed cycle, so the limit sits far above what outages, restarts and
stops cost (with the worker's doubling pause, about a day of outage)."""


def partition_queue(index: int) -> str:
    """The name of partition queue `index`."""
    return f"{EXCHANGE}.p{index}"


async def declare(channel: AbstractChannel, partitions: int) -> AbstractExchange:
    """Declare the exchange, the P partition queues and the dead-letter queue (idempotent).

    P must stay the same while messages are queued: the hash maps keys to buckets by count,
    so adding or removing a queue moves keys, and their order across the move is lost.
    """
    exchange = await channel.declare_exchange(EXCHANGE, type="x-consistent-hash", durable=True)
    for index in range(partitions):
        queue = await declare_partition(channel, index)
        await queue.bind(exchange, routing_key="1")  # equal weight for every partition
    dead_letters = await channel.declare_exchange(
        DEAD_LETTER_EXCHANGE, type=aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead = await channel.declare_queue(
        DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(dead_letters)
    return exchange


async def declare_partition(channel: AbstractChannel, index: int) -> AbstractQueue:
    """Declare partition queue `index` with the arguments every declarer must agree on."""
    return await channel.declare_queue(
        partition_queue(index),
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-single-active-consumer": True,
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        },
    )
