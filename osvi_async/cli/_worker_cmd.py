"""`osvi-async worker --broker URL`: run a `Worker` until SIGINT or SIGTERM.

What it prints (stderr only; stdout stays empty):

- at start, one line: the partitions, the broker (its password as `***`), the sizes;
- every `--stats-every` seconds, the counters of `Worker.stats` on one line;
- the SDK's warnings (a lost broker connection, say), one line each;
- at the end, one summary line.

A stop signal stops the worker gracefully (`Worker.stop`: nothing new starts, calls in flight
get `--grace` seconds, their messages are acked or dead-lettered, the rest goes back to the
queue in order) and exits 130 or 143. A second signal exits at once: calls in flight are cut
off, and the broker gives their messages to the next worker as redeliveries, which that worker
flags as possible duplicates. A broker that cannot be reached at start is exit 3; once the
worker runs, it reconnects on its own.
"""

# ruff: noqa: PLR0917 - click passes options as parameters

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import click

from osvi_async.cli import exit_now
from osvi_async.cli._broker import (
    Redactor,
    check_partitions,
    connect_or_exit,
    quiet_amqp,
    shown_url,
)
from osvi_async.cli._common import (
    EXIT_FAILED,
    EXIT_USAGE,
    api_options,
    fail,
    log_lines,
    make_client,
    run_coroutine,
    stderr_line,
)
from osvi_async.cli._options import MAX_CONCURRENCY, FiniteFloat
from osvi_async.cli._output import visible
from osvi_async.cli._publish import broker_options
from osvi_async.cli._report import ReportError
from osvi_async.cli._signals import GracefulStop, SignalActions, exit_code, signal_name
from osvi_async.cli._worker_report import WorkerReportWriter, open_worker_report

if TYPE_CHECKING:
    from osvi_async import OsviClient
    from osvi_async.worker import Worker, WorkerStats

_SDK_LOGGER: Final = "osvi_async"
_WORKER_LOGGER: Final = "osvi_async.worker"


def stats_line(stats: WorkerStats) -> str:
    """`Worker.stats` as one log line."""
    state = "connected" if stats.connected else "not connected"
    return (
        f"worker: {state}, {stats.in_flight} in flight, {stats.received} received, "
        f"{stats.succeeded} applied ({stats.possible_duplicates} possible duplicates), "
        f"{stats.dead_lettered} dead-lettered, {stats.returned} returned, "
        f"{stats.cycles} cycles"
    )


def summary_line(stats: WorkerStats, stop: GracefulStop, report_failed: bool) -> str:
    """The closing line: what stopped the worker, and what it did."""
    if stop.signum is not None:
        how = "at once" if stop.signals > 1 else "after in-flight messages finished"
        cause = f"{signal_name(stop.signum)} ({how})"
    else:
        cause = "a failed report write" if report_failed else "its end"
    line = (
        f"stopped by {cause}: {stats.received} received, {stats.succeeded} applied "
        f"({stats.possible_duplicates} possible duplicates), {stats.dead_lettered} "
        f"dead-lettered, {stats.returned} returned to their queue"
    )
    if stop.signals > 1 and stats.in_flight:
        line += (
            f", {stats.in_flight} cut off in flight (may have been applied; the broker "
            "delivers them again, flagged as possible duplicates)"
        )
    return line


class _Say(Protocol):
    """Writes one of the worker command's own lines; `event` names its JSON record."""

    def __call__(self, text: str, event: str = "notice") -> None: ...


class _LogLines(logging.Handler):
    """The SDK's log records as one line each on stderr, secrets redacted."""

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self._say = say

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = " ".join(record.getMessage().split())
            prefix = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
            self._say(f"{prefix}{message}")
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _sdk_logs(say: Callable[[str], None]) -> Iterator[None]:
    """Route the SDK's warnings, and the worker's own info lines, through `say`."""
    sdk, worker = logging.getLogger(_SDK_LOGGER), logging.getLogger(_WORKER_LOGGER)
    installed = log_lines()  # --log-level / --log-format: that handler's lines, through `say`
    handler: logging.Handler = _LogLines(say) if installed is None else installed
    propagate, level = sdk.propagate, worker.level
    write = installed.write if installed is not None else say
    if installed is None:
        sdk.addHandler(handler)
    else:
        installed.write = say
    sdk.propagate = False
    worker.setLevel(logging.INFO)
    try:
        yield
    finally:
        if installed is None:
            sdk.removeHandler(handler)
        else:
            installed.write = write
        sdk.propagate = propagate
        worker.setLevel(level)


@click.command()
@broker_options
@click.option(
    "--prefetch",
    type=click.IntRange(min=1, max=65535),
    default=256,
    show_default=True,
    help="Most unacked messages the broker hands this worker at once.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=MAX_CONCURRENCY),
    default=64,
    show_default=True,
    help="Requests in flight at most.",
)
@click.option(
    "--grace",
    type=FiniteFloat(min=0),
    default=10.0,
    show_default=True,
    help="Seconds calls in flight get to finish after SIGINT or SIGTERM.",
)
@click.option("--report", type=click.Path(path_type=Path), help="JSONL: one line per message.")
@click.option(
    "--stats-every",
    type=FiniteFloat(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds between two lines of counters on stderr.",
)
@api_options
def worker(
    broker_url: str,
    partitions: int,
    prefetch: int,
    concurrency: int,
    grace: float,
    report: Path | None,
    stats_every: float,
    token: str | None,
    base_url: str | None,
    timeout: float,
) -> None:
    """Apply the injections published to the broker until SIGINT or SIGTERM.

    Runs one worker: the broker gives each partition to one worker at a time, so run as
    many as you like, on as many machines (one per core). Each session's messages are
    applied one at a time, in publish order. SIGINT or SIGTERM stops it gracefully (calls in
    flight get --grace seconds; exit 130 or 143); a second signal stops it at once.
    """
    client = make_client(token, base_url, timeout, concurrency=concurrency)
    redact = Redactor.of(broker_url, token)

    def say(text: str, event: str = "notice") -> None:
        # Our own lines (start, counters, summary): nothing secret in them to take out. With
        # --log-format json, each is a JSON record named `event`.
        stderr_line(visible(text), event=event)

    def say_redacted(text: str) -> None:
        # Lines with text from elsewhere (SDK and aio-pika errors).
        click.echo(redact(text), err=True)

    writer: WorkerReportWriter | None = None
    if report is not None:
        try:
            writer = open_worker_report(report)
        except ReportError as error:
            raise fail(str(error), EXIT_USAGE) from None
    stop = GracefulStop(grace, notice=say)
    try:
        with quiet_amqp(), _sdk_logs(say_redacted):
            stats = run_coroutine(
                _work(
                    client,
                    broker_url,
                    partitions=partitions,
                    prefetch=prefetch,
                    concurrency=concurrency,
                    grace=grace,
                    stats_every=stats_every,
                    writer=writer,
                    stop=stop,
                    say=say,
                    say_redacted=say_redacted,
                )
            )
    finally:
        if writer is not None:
            writer.close()
    failure = writer.failure if writer is not None else None
    say(summary_line(stats, stop, failure is not None), "summary")
    if stop.signum is not None:
        raise click.exceptions.Exit(exit_code(stop.signum))
    raise click.exceptions.Exit(EXIT_FAILED)


async def _work(
    client: OsviClient,
    url: str,
    *,
    partitions: int,
    prefetch: int,
    concurrency: int,
    grace: float,
    stats_every: float,
    writer: WorkerReportWriter | None,
    stop: GracefulStop,
    say: _Say,
    say_redacted: Callable[[str], None],
) -> WorkerStats:
    from osvi_async.worker import Worker  # noqa: PLC0415 - the worker extra

    async with client:
        worker = Worker(
            client,
            url,
            partitions=partitions,
            prefetch=prefetch,
            concurrency=concurrency,
            grace=grace,
            on_outcome=writer.write_message if writer is not None else None,
        )

        def at_once() -> None:
            say(summary_line(worker.stats, stop, False), "summary")
            exit_now(exit_code(stop.signum or 0))

        with stop.installed():
            stop.attach(SignalActions(stop, first=worker.stop, again=at_once))
            if writer is not None:
                writer.on_failure = lambda: _report_failed(writer, worker, say_redacted)
            connection = await connect_or_exit(url, Redactor.of(url))
            async with connection:
                await check_partitions(connection, partitions)
            last = partitions - 1
            say(
                f"worker: {partitions} partitions (osvi.inject.p0 to p{last}) on "
                f"{shown_url(url)}, prefetch {prefetch}, concurrency {concurrency}, "
                f"grace {grace:g} s; stop with SIGINT or SIGTERM",
                "worker_started",
            )
            async with worker:
                ticker = asyncio.create_task(_tick(worker, stats_every, say))
                try:
                    await worker.wait()
                finally:
                    ticker.cancel()
        return worker.stats


def _report_failed(writer: WorkerReportWriter, worker: Worker, say: Callable[[str], None]) -> None:
    """A report that cannot grow: say so once and stop gracefully (exit 1)."""
    error = writer.failure
    reason = (error.strerror or str(error)) if error is not None else "unknown"
    text = f"cannot write the report: {reason}; the worker stops"
    stderr_line(text, event="error", level=logging.ERROR, write=say)
    worker.stop()


async def _tick(worker: Worker, every: float, say: _Say) -> None:
    """Every `every` seconds, the counters on one line."""
    while True:
        await asyncio.sleep(every)
        say(stats_line(worker.stats), "worker_stats")
