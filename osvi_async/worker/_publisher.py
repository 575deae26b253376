"""`Publisher`: put injections on the broker from a web backend, an event handler or a file."""

from __future__ import annotations

import time
import uuid
from types import TracebackType
from typing import TYPE_CHECKING, Self

import aio_pika

from osvi_async._validation import check_positive_int
from osvi_async.errors import ClientClosedError
from osvi_async.models import CustomerInjectRequest, InjectRequest
from osvi_async.worker._message import KEY_HEADER, Request, encode
from osvi_async.worker._topology import DEFAULT_PARTITIONS, declare

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange


class Publisher:
    """Publishes injections to the `osvi.inject` exchange for workers to apply.

    Use it as an async context manager::

        async with Publisher("amqp://guest:guest@127.0.0.1/") as publisher:
            await publisher.publish(InjectRequest(session_id, "Voice call: wants a refund."))

    Every message is persistent and `publish` returns once the broker confirmed it (it is then
    on disk in its partition queue). Messages with one ordering key (a session, or a customer
    and agent) published one after the other by one publisher reach their worker in that
    order; the topology is declared on entry, the same way workers declare it.

    Args:
        broker_url: The AMQP URL of the RabbitMQ broker.
        partitions: The number of partition queues P; the same for every publisher and
            worker of a deployment, and never changed while messages are queued.
    """

    def __init__(self, broker_url: str, *, partitions: int = DEFAULT_PARTITIONS) -> None:
        self._url = broker_url
        self._partitions = check_positive_int("partitions", partitions)
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def __aenter__(self) -> Self:
        self._connection = await aio_pika.connect(self._url)
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await declare(self._channel, self._partitions)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection; idempotent."""
        connection, self._connection = self._connection, None
        self._exchange = self._channel = None
        if connection is not None:
            await connection.close()

    async def publish(self, request: Request) -> str:
        """Publish one injection and wait for the broker's confirm; returns its message id.

        Raises:
            ClientValidationError: The request is invalid; nothing was published.
            ClientClosedError: The publisher is not open.
        """
        if self._exchange is None:
            raise ClientClosedError("This Publisher is not open; use 'async with Publisher(...)'")
        body, key = encode(request)
        message_id = uuid.uuid4().hex
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            timestamp=time.time(),
            headers={KEY_HEADER: key},
        )
        await self._exchange.publish(message, routing_key=key)
        return message_id

    async def publish_context(self, session_id: str, context: str) -> str:
        """Publish `context` for session `session_id`; see `publish`."""
        return await self.publish(InjectRequest(session_id, context))

    async def publish_for_customer(self, customer_id: str, agent_uuid: str, context: str) -> str:
        """Publish `context` for the customer's active session with the agent; see `publish`."""
        return await self.publish(CustomerInjectRequest(customer_id, agent_uuid, context))
