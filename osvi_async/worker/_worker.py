"""`Worker`: apply injections from the broker's partition queues, in order, losing nothing.

One consuming cycle, top to bottom:

1. connect, declare the topology, consume every partition queue on one channel (the broker
   gives each partition to one worker at a time);
2. put deliveries back in delivery order (aiormq runs one task per delivery, so handler order
   is not delivery order; delivery tags are) and feed them to `OsviClient.inject_many`, whose
   per-session lanes send one request at a time per session, in order, with retries under the
   retry budget and circuit breaker;
3. settle each outcome: a success is acked; a permanent failure (invalid, 400/404/422, an
   engine refusal) is published to the dead-letter queue with its reason, then acked; a
   transient failure that outlived its retries, and every item held behind it, is left
   unacked and ends the cycle;
4. end the cycle: stop starting items, let calls in flight finish (grace), settle them, then
   close the channel **without cancelling the consumers first**: the broker returns the
   unacked messages to their queues in order (cancelling first reordered some), ready for the
   next cycle or for a standby worker.

A redelivered message may have been applied by whoever had it before: it is sent as a resend
(`may_have_been_applied=True`), so a success is flagged `possible_duplicate`, unless this
process itself knows it never sent it. Connection loss ends the cycle at once and starts a new
one after a pause; nothing in memory survives a cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import aio_pika
import attrs

from osvi_async._lanes import refused_for_good
from osvi_async._logging import failure_for_logs
from osvi_async._validation import check_positive_int, check_seconds
from osvi_async.errors import ItemHeldError, OsviError, RunStoppedError
from osvi_async.models import InjectOutcome
from osvi_async.worker._message import PoisonMessageError, decode
from osvi_async.worker._topology import (
    DEAD_LETTER_EXCHANGE,
    DEFAULT_PARTITIONS,
    declare,
    declare_partition,
)

if TYPE_CHECKING:
    from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

    from osvi_async import BulkRun, OsviClient, RetryPolicy

logger: Final = logging.getLogger("osvi_async.worker")

_CONNECT_TIMEOUT: Final = 10.0
MAX_RESTART_DELAY: Final = 60.0
"""Longest pause between failed cycles. Every cycle returns its unacked messages, and every
return counts towards the queue's delivery limit: the pause doubles while cycles keep failing,
so an outage of hours, not minutes, is what it takes to reach the limit."""


@attrs.frozen(kw_only=True)
class WorkerStats:
    """What a worker has done since it started (`Worker.stats`), for logs and probes.

    Attributes:
        connected: Whether a consuming cycle is running now.
        cycles: Consuming cycles started (1 + reconnections and restarts).
        received: Messages delivered to this worker (redeliveries included).
        succeeded: Messages applied and acked.
        possible_duplicates: Of those, results flagged `possible_duplicate`.
        dead_lettered: Messages published to the dead-letter queue and acked.
        returned: Messages left unacked at the end of a cycle (they go back to their queue).
        in_flight: Messages received in this cycle and not yet settled.
    """

    connected: bool
    cycles: int
    received: int
    succeeded: int
    possible_duplicates: int
    dead_lettered: int
    returned: int
    in_flight: int


class _Counters:
    def __init__(self) -> None:
        self.connected = False
        self.cycles = self.received = self.succeeded = self.possible_duplicates = 0
        self.dead_lettered = self.returned = 0


class _InDeliveryOrder:
    """Deliveries of one channel, handed out in delivery-tag order whatever order their
    handler tasks ran in."""

    def __init__(self) -> None:
        self._next_tag = 1
        self._early: dict[int, AbstractIncomingMessage] = {}
        self._ready: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def put(self, message: AbstractIncomingMessage) -> None:
        tag = message.delivery_tag or 0
        self._early[tag] = message
        while self._next_tag in self._early:
            self._ready.put_nowait(self._early.pop(self._next_tag))
            self._next_tag += 1

    async def get(self) -> AbstractIncomingMessage:
        return await self._ready.get()

    def pending(self) -> int:
        return len(self._early) + self._ready.qsize()


class Worker:
    """Consumes the partition queues and injects each message with an `OsviClient`.

    Use it as an async context manager; leaving it stops gracefully::

        async with OsviClient() as client, Worker(client, "amqp://127.0.0.1/") as worker:
            await worker.wait()  # until worker.stop() (from a signal handler, say)

    Args:
        client: The client that sends the injections (its timeout should stay well under the
            AMQP heartbeat; the worker sets the heartbeat to at least twice it).
        broker_url: The AMQP URL of the RabbitMQ broker.
        partitions: P, as the publishers use it.
        prefetch: Most unacked messages the broker hands this worker at once, split evenly
            over the partitions (at least one each: quorum queues only take a limit per
            consumer).
        concurrency: Most injections in flight at once.
        grace: Seconds calls in flight may take to finish when a cycle ends or the worker
            stops; after that they are cut off and their messages go back to the queue.
        retry: Retry policy per message; the client's by default.
        restart_delay: Seconds between the end of a cycle that failed (a transient failure
            outlived its retries, or the connection was lost) and the next.
        on_outcome: Called with each settled outcome and its message id (for a report).
    """

    def __init__(
        self,
        client: OsviClient,
        broker_url: str,
        *,
        partitions: int = DEFAULT_PARTITIONS,
        prefetch: int = 256,
        concurrency: int = 64,
        grace: float = 10.0,
        retry: RetryPolicy | None = None,
        restart_delay: float = 1.0,
        on_outcome: Callable[[InjectOutcome, str | None], None] | None = None,
    ) -> None:
        self._client = client
        self._url = broker_url
        self._partitions = check_positive_int("partitions", partitions)
        self._prefetch = check_positive_int("prefetch", prefetch)
        self._concurrency = check_positive_int("concurrency", concurrency)
        self._grace = check_seconds("grace", grace, allow_zero=True)
        self._retry = retry
        self._restart_delay = check_seconds("restart_delay", restart_delay, allow_zero=True)
        self._on_outcome = on_outcome
        self._counters = _Counters()
        self._last_failure: OsviError | None = None
        self._cycle_task: asyncio.Task[bool] | None = None
        self._stopping = asyncio.Event()
        self._run: BulkRun | None = None
        self._in_flight: dict[int, AbstractIncomingMessage] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def stats(self) -> WorkerStats:
        """The counters now."""
        c = self._counters
        return WorkerStats(
            connected=c.connected,
            cycles=c.cycles,
            received=c.received,
            succeeded=c.succeeded,
            possible_duplicates=c.possible_duplicates,
            dead_lettered=c.dead_lettered,
            returned=c.returned,
            in_flight=len(self._in_flight),
        )

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self.run(), name="osvi-worker")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        await self.wait()

    async def wait(self) -> None:
        """Wait until the worker started by `async with` has stopped."""
        if self._task is not None:
            await self._task

    def stop(self) -> None:
        """Stop gracefully: start nothing more, finish what is in flight within `grace`.

        A plain method, safe to call from a signal handler; calling it again does nothing.
        """
        self._stopping.set()
        if self._run is not None:
            self._run.drain(self._grace)
        elif self._cycle_task is not None and not self._counters.connected:
            self._cycle_task.cancel()  # still connecting: a broker that never answers

    async def run(self) -> None:
        """Consume until `stop()`: cycle after cycle, reconnecting after failures, pausing
        longer (up to a minute) while cycles keep failing."""
        delay = self._restart_delay
        while not self._stopping.is_set():
            failed = True
            self._last_failure = None
            self._cycle_task = asyncio.create_task(self._cycle())
            try:
                failed = await self._cycle_task
            except asyncio.CancelledError:
                if not self._stopping.is_set():
                    raise
                return  # stop() while connecting: nothing was consumed
            except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as error:
                logger.warning(
                    "worker: broker connection failed (%s)",
                    error or type(error).__name__,
                    extra={"event": "broker_connection_failed"},
                )
            finally:
                self._cycle_task = None
                self._counters.connected = False
                self._run = None
            if not failed:
                delay = self._restart_delay
                continue
            failure = self._failure_of_last_cycle()
            if failure is not None:
                logger.warning(
                    "worker: a message failed past its retries (%s); the unacked messages "
                    "went back to their queues; starting again in %.1f s",
                    failure_for_logs(failure),  # not its message: it may name a customer
                    delay,
                    extra={"event": "worker_restart", "delay": delay},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(MAX_RESTART_DELAY, max(delay * 2, 0.1))

    def _failure_of_last_cycle(self) -> OsviError | None:
        """The failure that ended the last cycle, if a message's did (set by `_settle`)."""
        return self._last_failure

    async def _cycle(self) -> bool:
        """One consuming cycle; returns whether it ended on a failure (so: pause first)."""
        heartbeat = max(30, int(2 * self._client.timeout) + 1)
        connection = await asyncio.wait_for(
            aio_pika.connect(self._url, heartbeat=heartbeat), _CONNECT_TIMEOUT
        )
        try:
            channel = await connection.channel(publisher_confirms=True)
            # Quorum queues take only a per-consumer limit: the worker's total is split over
            # its partitions (at least one message each).
            per_partition = max(1, self._prefetch // self._partitions)
            await channel.set_qos(prefetch_count=per_partition)
            await declare(channel, self._partitions)
            dead_letters = await channel.get_exchange(DEAD_LETTER_EXCHANGE)
            deliveries = _InDeliveryOrder()
            for index in range(self._partitions):
                queue = await declare_partition(channel, index)
                await queue.consume(deliveries.put)
            self._counters.cycles += 1
            self._counters.connected = True
            logger.info(
                "worker: consuming %d partitions",
                self._partitions,
                extra={"event": "worker_consuming"},
            )
            lost = asyncio.Event()
            connection.close_callbacks.add(lambda *_: self._connection_lost(lost))
            failed = await self._apply(deliveries, dead_letters)
            self._counters.returned += len(self._in_flight) + deliveries.pending()
            return failed or lost.is_set()
        finally:
            self._in_flight.clear()
            # The channel closes without basic.cancel: unacked messages return in order.
            with contextlib.suppress(Exception):
                await connection.close()

    def _connection_lost(self, lost: asyncio.Event) -> None:
        lost.set()
        if self._run is not None:
            self._run.drain(0)  # nothing can be acked any more

    async def _apply(self, deliveries: _InDeliveryOrder, dead_letters: AbstractExchange) -> bool:
        """Feed deliveries to inject_many and settle the outcomes; True if a failure ended it."""
        failed = False
        run = self._client.inject_many(
            self._requests(deliveries, dead_letters),
            concurrency=self._concurrency,
            retry=self._retry,
            max_pending=self._prefetch,
        )
        self._run = run
        if self._stopping.is_set():
            run.drain(self._grace)
        async with run:
            async for outcome in run:
                message = self._in_flight.pop(outcome.index)
                if not await self._settle(outcome, message, dead_letters):
                    failed = True
                    run.drain(self._grace)  # the rest goes back to the queue, in order
        return failed

    async def _requests(
        self, deliveries: _InDeliveryOrder, dead_letters: AbstractExchange
    ) -> AsyncIterator[Any]:
        index = 0
        while True:
            message = await deliveries.get()
            self._counters.received += 1
            try:
                # A redelivered message may have been applied by whoever had it before, in
                # this process or another: it is always sent as a resend (and flagged).
                request = decode(message.body, redelivered=bool(message.redelivered))
            except PoisonMessageError as poison:
                await self._dead_letter(message, dead_letters, reason=poison.reason)
                continue
            self._in_flight[index] = message
            index += 1
            yield request

    async def _settle(
        self,
        outcome: InjectOutcome,
        message: AbstractIncomingMessage,
        dead_letters: AbstractExchange,
    ) -> bool:
        """Ack, dead-letter or leave the message; False when its failure should end the cycle."""
        if self._on_outcome is not None:
            self._on_outcome(outcome, message.message_id)
        error = outcome.error
        if outcome.ok:
            self._counters.succeeded += 1
            if outcome.result is not None and outcome.result.possible_duplicate:
                self._counters.possible_duplicates += 1
            await _ack(message)
            return True
        if error is not None and refused_for_good(error):
            await self._dead_letter(message, dead_letters, error=error)
            return True
        if self._last_failure is None and not isinstance(error, RunStoppedError | ItemHeldError):
            self._last_failure = error  # the cause, not the items held behind it
        return isinstance(error, RunStoppedError)  # a stop is not a failure

    async def _dead_letter(
        self,
        message: AbstractIncomingMessage,
        dead_letters: AbstractExchange,
        *,
        reason: str | None = None,
        error: OsviError | None = None,
    ) -> None:
        headers: dict[str, Any] = dict(message.headers or {})
        headers["x-osvi-reason"] = reason or str(error)
        if error is not None:
            headers["x-osvi-error"] = type(error).__name__
            headers["x-osvi-code"] = getattr(error, "code", None) or ""
            headers["x-osvi-may-have-been-applied"] = error.may_have_been_applied
        await dead_letters.publish(
            aio_pika.Message(
                message.body,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message.message_id,
                headers=headers,
            ),
            routing_key="",
        )
        self._counters.dead_lettered += 1
        await _ack(message)


async def _ack(message: AbstractIncomingMessage) -> None:
    # A channel closed under us (connection lost): the message comes back anyway.
    with contextlib.suppress(Exception):
        await message.ack()
