"""`osvi-async publish --broker URL INPUT`: put the rows of a bulk input file on the broker.

It reads INPUT exactly as `bulk` does (`_bulk_io`: JSON Lines or CSV, rows addressed by
session or by customer and agent, malformed rows naming their line) and publishes each valid
row with `Publisher`, one after the other, each confirmed by the broker before the next: rows
of one session (or customer and agent) reach the workers in input order. No API token is
needed: the workers call the API. An invalid row is not published; it is named on stderr with
its line (as bulk's report names it) and makes the exit status 1.

SIGINT or SIGTERM stops after the row being published is confirmed (exit 130 or 143, one
summary line saying through which line the input was published); a second signal stops at
once, and the row in flight then may or may not have been published.
"""

# ruff: noqa: PLR0917 - click passes options as parameters

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, cast

import attrs
import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from osvi_async import ClientValidationError
from osvi_async._config import DEFAULT_MAX_CONTEXT_BYTES
from osvi_async.cli._broker import (
    BrokerUrl,
    Redactor,
    check_partitions,
    connect_or_exit,
    quiet_amqp,
    shown_url,
)
from osvi_async.cli._bulk_io import (
    InputError,
    InputFormat,
    Record,
    detect_format,
    input_lines,
    open_text,
    read_first_line,
    read_records,
)
from osvi_async.cli._common import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    F,
    fail,
    run_coroutine,
)
from osvi_async.cli._progress import LiveBar
from osvi_async.cli._signals import GracefulStop, SignalActions, exit_code, signal_name

if TYPE_CHECKING:
    pass

BROKER_HELP: Final = (
    "RabbitMQ AMQP URL (amqp://USER:PASSWORD@HOST:PORT/VHOST); defaults to $OSVI_BROKER_URL. "
    "The password is never printed."
)
PARTITIONS_HELP: Final = "Partition queues P: the same for every publisher and worker."
MOST_PARTITIONS: Final = 1024
_SHOWN_LINES: Final = 10


def broker_options(command: F) -> F:
    """--broker (or $OSVI_BROKER_URL) and --partitions, the same on every broker command."""
    command = click.option(
        "--partitions",
        type=click.IntRange(min=1, max=MOST_PARTITIONS),
        default=16,
        show_default=True,
        help=PARTITIONS_HELP,
    )(command)
    return click.option(
        "--broker",
        "broker_url",
        type=BrokerUrl(),
        envvar="OSVI_BROKER_URL",
        show_envvar=False,
        required=True,
        help=BROKER_HELP,
    )(command)


@attrs.define
class PublishCounts:
    """What a publish run did (the progress bar and the summary read it)."""

    published: int = 0
    invalid_lines: list[int] = attrs.field(factory=list)
    last_line: int | None = None
    """The input line of the last row the broker confirmed."""
    unread: bool = False
    """The run stopped before the end of the input."""
    at_once: bool = False
    """A second signal stopped the run at once."""
    cut_at: int | None = None
    """The line of the row being published when it did."""

    def invalid(self, record: Record, problem: str, console: Console) -> None:
        """Count an invalid row and name it on stderr (one line)."""
        self.invalid_lines.append(record.line)
        console.print(f"invalid: {problem}", markup=False, highlight=False, soft_wrap=True)

    def summary(self, stop: GracefulStop) -> str:
        """The closing line."""
        through = f" (through line {self.last_line})" if self.last_line is not None else ""
        line = f"published {self.published} rows{through}, {len(self.invalid_lines)} invalid"
        if self.invalid_lines:
            shown = ", ".join(str(n) for n in self.invalid_lines[:_SHOWN_LINES])
            more = ", ..." if len(self.invalid_lines) > _SHOWN_LINES else ""
            line += f" (lines {shown}{more}: not published)"
        if stop.signum is not None:
            how = "at once" if self.at_once else "after the row in flight"
            line = f"stopped by {signal_name(stop.signum)} ({how}): {line}"
            if self.cut_at is not None:
                line += f"; the row of line {self.cut_at} may or may not have been published"
            if self.unread:
                line += "; the rows after it were not published"
        return line

    def exit_code(self, stop: GracefulStop) -> int:
        """130/143 after a signal, 1 if a row was invalid, else 0."""
        if stop.signum is not None:
            return exit_code(stop.signum)
        return EXIT_FAILED if self.invalid_lines else 0


class _PublishProgress(LiveBar):
    """A live bar on a terminal (published/total, rate, invalid); nothing elsewhere."""

    def __init__(self, console: Console, counts: PublishCounts, total: int | None) -> None:
        self._counts = counts
        self._progress = Progress(
            TextColumn("[bold]publishing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[invalid]} invalid[/]"),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=10,
            disable=not console.is_terminal,
        )
        self._task = self._progress.add_task("publishing", total=total, invalid=0)

    def refresh(self) -> None:
        """Push the counters to the display (rich redraws at most 10 times a second)."""
        counts = self._counts
        self._progress.update(
            self._task,
            completed=counts.published + len(counts.invalid_lines),
            invalid=len(counts.invalid_lines),
        )


@click.command()
@click.argument("input_path", metavar="INPUT")
@broker_options
@click.option("--format", "input_format", type=click.Choice(["auto", "jsonl", "csv"]))
def publish(input_path: str, broker_url: str, partitions: int, input_format: str | None) -> None:
    """Publish every row of INPUT (JSON Lines or CSV, as for bulk; - for stdin) to the broker.

    Workers (osvi-async worker) apply them. Rows of one session are published, and applied,
    in input order. Invalid rows are named on stderr and not published (exit 1). SIGINT or
    SIGTERM stops after the row in flight is confirmed (exit 130 or 143).
    """
    limit = DEFAULT_MAX_CONTEXT_BYTES
    try:
        stream = open_text(input_path)
    except InputError as error:
        raise fail(str(error), EXIT_USAGE) from None
    redact = Redactor.of(broker_url)
    console = Console(stderr=True)
    counts = PublishCounts()
    stop = GracefulStop(0.0)
    with stream:
        first = read_first_line(stream, limit)
        fmt: InputFormat = (
            detect_format(input_path, first)
            if input_format in (None, "auto")
            else cast("InputFormat", input_format)
        )
        try:
            records = read_records(
                input_lines(stream, fmt, limit, first=first), fmt, max_context_bytes=limit
            )
        except InputError as error:
            raise fail(str(error), EXIT_USAGE) from None
        total = _count(input_path, fmt, limit)
        with quiet_amqp(), _PublishProgress(console, counts, total) as progress:
            run_coroutine(
                _publish_all(
                    broker_url, partitions, records, counts, progress, stop, redact, console
                )
            )
    console.print(counts.summary(stop), markup=False, highlight=False, soft_wrap=True)
    code = counts.exit_code(stop)
    if code:
        raise click.exceptions.Exit(code)


def _count(input_path: str, fmt: InputFormat, limit: int) -> int | None:
    """How many rows INPUT holds, for the bar's total (None for stdin: it is read once)."""
    if input_path == "-":
        return None
    try:
        with open_text(input_path) as text:
            lines = input_lines(text, fmt, limit, first=read_first_line(text, limit))
            return sum(1 for _ in read_records(lines, fmt, max_context_bytes=limit))
    except (InputError, OSError):
        return None


def _too_large(record: Record) -> bool:
    """A context the workers' clients would refuse (1 MiB of UTF-8 by default)."""
    request = record.request
    return request is not None and len(request.context.encode()) > DEFAULT_MAX_CONTEXT_BYTES


async def _publish_all(
    url: str,
    partitions: int,
    records: Iterable[Record],
    counts: PublishCounts,
    progress: _PublishProgress,
    stop: GracefulStop,
    redact: Redactor,
    console: Console,
) -> None:
    """Publish the valid rows one by one, each confirmed; stop between rows on a signal."""
    import aio_pika  # noqa: PLC0415 - the worker extra

    from osvi_async.worker import Publisher  # noqa: PLC0415

    task = cast("asyncio.Task[None]", asyncio.current_task())
    in_flight: list[int] = []
    actions = SignalActions(stop, first=lambda: None, again=lambda: _cancel(task))
    with stop.installed():
        stop.attach(actions)
        try:
            connection = await connect_or_exit(url, redact)
            async with connection:
                await check_partitions(connection, partitions)
            async with Publisher(url, partitions=partitions) as publisher:
                for record in records:
                    if stop.signals:
                        counts.unread = True
                        break
                    if record.request is None:
                        counts.invalid(record, record.problem or f"line {record.line}", console)
                    elif _too_large(record):
                        problem = f"context is larger than {DEFAULT_MAX_CONTEXT_BYTES} bytes"
                        counts.invalid(record, f"line {record.line}: {problem}", console)
                    else:
                        in_flight[:] = [record.line]
                        try:
                            await publisher.publish(record.request)
                        except ClientValidationError as error:
                            counts.invalid(record, f"line {record.line}: {error}", console)
                        else:
                            counts.published += 1
                            counts.last_line = record.line
                        in_flight.clear()
                    progress.refresh()
        except asyncio.CancelledError:
            counts.unread = counts.at_once = True
            counts.cut_at = in_flight[0] if in_flight else None
        except (OSError, aio_pika.exceptions.AMQPError) as error:
            where = f" (through line {counts.last_line})" if counts.last_line else ""
            line = in_flight[0] if in_flight else None
            cut = f"; the row of line {line} may or may not have been published" if line else ""
            reason = redact(str(error) or type(error).__name__)
            raise fail(
                f"lost the broker at {shown_url(url)} after publishing {counts.published} "
                f"rows{where}: {type(error).__name__}: {reason}{cut}",
                EXIT_UNREACHABLE,
            ) from None


def _cancel(task: asyncio.Task[None]) -> None:
    """Stop the publish loop at once (a second signal)."""
    task.cancel()
