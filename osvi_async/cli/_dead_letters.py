"""`osvi-async dead-letters --broker URL [--requeue] [--json]`: look at, and retry, dead letters.

Workers publish a message they can never apply (a 404 session, a 400/422 refusal, a body that
is not an injection) to the queue `osvi.inject.dead`, with the reason in its headers
(`x-osvi-reason`, `x-osvi-error`, `x-osvi-code`, `x-osvi-may-have-been-applied`). This command
reads them with `basic.get` (the dead-letter queue is a quorum queue without a single active
consumer, so it allows that) and holds them unacked: listing leaves them all in the queue (the
broker takes them back when the channel closes). With `--requeue` each injection is published
again through the exchange with `Publisher`, confirmed, and only then acked, so a failure in
between leaves a copy in both places, never in neither. A body that is not an injection
cannot be republished: it stays in the queue (exit 1).

A requeued message is a new message at the back of its partition: it is applied after
whatever its session received since, and a worker does not know an earlier attempt may have
applied it (`may_have_been_applied: true` in the listing): check such letters first.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Final

import attrs
import click

from osvi_async.cli import set_stop_note
from osvi_async.cli._broker import (
    Redactor,
    check_partitions,
    connect_or_exit,
    quiet_amqp,
    unreachable,
)
from osvi_async.cli._common import EXIT_FAILED, Output, json_option, run_coroutine
from osvi_async.cli._publish import broker_options
from osvi_async.errors import ClientValidationError

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue

_SHOWN_BODY: Final = 200
_REQUEUE_NOTE: Final = (
    "a dead letter was being requeued: it may be in a partition queue and still in "
    "osvi.inject.dead; list them before requeueing again"
)


@attrs.frozen(kw_only=True)
class DeadLetter:
    """One dead letter as listed: the injection it carries and why it was dead-lettered."""

    message_id: str | None
    session_id: str | None
    customer_id: str | None
    agent_uuid: str | None
    context: str | None
    body: str | None
    """The body as text when it is not an injection (cut to 200 characters), else None."""
    reason: str | None
    error: str | None
    code: str | None
    may_have_been_applied: bool

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> DeadLetter:
        """Read the body (leniently: a poison message is listed too) and the headers."""
        headers = message.headers or {}
        try:
            payload = json.loads(message.body)
        except (ValueError, RecursionError):  # poison: not JSON, or nested past any limit
            payload = None
        fields = payload if isinstance(payload, dict) else {}

        def text(value: object) -> str | None:
            if isinstance(value, bytes):
                return value.decode(errors="replace")
            return value if isinstance(value, str) else None

        injection = isinstance(fields.get("context"), str)
        return cls(
            message_id=message.message_id,
            session_id=text(fields.get("session_id")),
            customer_id=text(fields.get("customer_id")),
            agent_uuid=text(fields.get("agent_uuid")),
            context=text(fields.get("context")),
            body=None if injection else message.body.decode(errors="replace")[:_SHOWN_BODY],
            reason=text(headers.get("x-osvi-reason")),
            error=text(headers.get("x-osvi-error")) or None,
            code=text(headers.get("x-osvi-code")) or None,
            may_have_been_applied=headers.get("x-osvi-may-have-been-applied") is True,
        )

    def line(self, requeued_as: str | None, left: bool) -> str:
        """One line for a person."""
        if self.session_id is not None:
            address = f"session {self.session_id}"
        elif self.customer_id is not None or self.agent_uuid is not None:
            address = f"customer {self.customer_id} agent {self.agent_uuid}"
        else:
            address = "not an injection"
        why = self.code or self.error or "poison"
        applied = "; may have been applied" if self.may_have_been_applied else ""
        shown = _shortened(self.context)
        what = f"context {shown!r}" if self.body is None else f"body {self.body!r}"
        line = f"{self.message_id or '-'}: {address}: {why}: {self.reason}{applied}; {what}"
        if requeued_as is not None:
            line += f"; requeued as {requeued_as}"
        elif left:
            line += "; left in the queue (not an injection a worker would take)"
        return line

    def as_json(self, requeued_as: str | None) -> str:
        """One JSON object (a line of --json output)."""
        return json.dumps(attrs.asdict(self) | {"requeued_as": requeued_as}, ensure_ascii=False)


@click.command("dead-letters")
@broker_options
@click.option(
    "--requeue", is_flag=True, help="Publish each back through the exchange, then remove it."
)
@json_option
def dead_letters(broker_url: str, partitions: int, requeue: bool, as_json: bool) -> None:
    """List the dead letters (osvi.inject.dead) and why each was dead-lettered.

    With --requeue, publish each injection again through the exchange for the workers to
    retry (--partitions must be the deployment's), then remove it from the dead letters.
    --json prints one JSON object per line.
    """
    output = Output(None)
    redact = Redactor.of(broker_url)
    with quiet_amqp():
        listed, requeued, left = run_coroutine(
            _dead_letters(
                broker_url,
                partitions,
                requeue=requeue,
                as_json=as_json,
                output=output,
                redact=redact,
            )
        )
    note = f"{listed} dead letters"
    if requeue:
        note += f"; requeued {requeued}, left {left} (not injections)"
    click.echo(note, err=True)
    if left:
        raise click.exceptions.Exit(EXIT_FAILED)


async def _dead_letters(
    url: str, partitions: int, *, requeue: bool, as_json: bool, output: Output, redact: Redactor
) -> tuple[int, int, int]:
    """(listed, requeued, left behind)."""
    import aio_pika  # noqa: PLC0415 - the worker extra

    from osvi_async.worker import (  # noqa: PLC0415
        DEAD_LETTER_QUEUE,
        PoisonMessageError,
        Publisher,
        decode,
        encode,
    )

    connection = await connect_or_exit(url, redact)
    listed = requeued = left = 0
    try:
        async with connection:
            if requeue:
                await check_partitions(connection, partitions)
            queue = await _dead_letter_queue(connection, DEAD_LETTER_QUEUE)
            if queue is None:
                return 0, 0, 0
            async with contextlib.AsyncExitStack() as stack:
                publisher = None
                if requeue:
                    publisher = await stack.enter_async_context(
                        Publisher(url, partitions=partitions)
                    )
                while (message := await queue.get(no_ack=False, fail=False)) is not None:
                    letter = DeadLetter.of(message)
                    listed += 1
                    requeued_as: str | None = None
                    kept = False
                    if publisher is not None:
                        try:
                            request = decode(message.body)
                            # What a worker would refuse (a context over the size limit)
                            # stays a dead letter instead of stopping the listing.
                            encode(request)
                        except (PoisonMessageError, ClientValidationError):
                            left += 1
                            kept = True
                        else:
                            set_stop_note(_REQUEUE_NOTE)
                            requeued_as = await publisher.publish(request)
                            await message.ack()
                            set_stop_note(None)
                            requeued += 1
                    if as_json:
                        output.json(letter.as_json(requeued_as))
                    else:
                        output.line(letter.line(requeued_as, left=kept))
    except (OSError, aio_pika.exceptions.AMQPError) as error:
        raise unreachable(url, error, redact) from None
    return listed, requeued, left


async def _dead_letter_queue(connection: AbstractConnection, name: str) -> AbstractQueue | None:
    """The dead-letter queue, or None when no worker or publisher has declared it yet."""
    import aio_pika  # noqa: PLC0415

    channel = await connection.channel()
    try:
        return await channel.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return None


def _shortened(text: str | None) -> str | None:
    """A context as listed: a dead letter can hold megabytes; the listing shows the start."""
    if text is None or len(text) <= _SHOWN_CONTEXT:
        return text
    return f"{text[:_SHOWN_CONTEXT]}... ({len(text)} characters)"


_SHOWN_CONTEXT = 2000
