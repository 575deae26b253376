"""The live progress bar of bulk runs: done/total, rate, ok, failed, held, retries, and the
adaptive concurrency limit with `--concurrency auto` (stderr).

It reads the run's one `BulkCounts` (totals are counted once, in the run) and redraws at
most 10 times a second. Its total is what this run means to send: records already done or
final in the report are not part of it, so a resumed run's bar ends at its total.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from osvi_async.cli._common import json_logs, log_lines

if TYPE_CHECKING:
    from osvi_async.cli._bulk_run import BulkCounts

_REFRESH_SECONDS: Final = 0.1
_SDK_LOGGER: Final = "osvi_async"


class _ConsoleHandler(logging.Handler):
    """Prints the SDK's log records through the console, above a live progress bar.

    Written straight to stderr, each record would land in the middle of the bar's line.
    Records are one line each, printed as plain text (no rich markup: server text is data).
    """

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = " ".join(record.getMessage().split())
            level = record.levelname.lower()
            self._console.print(
                f"{level}: {message}", markup=False, highlight=False, soft_wrap=True
            )
        except Exception:
            self.handleError(record)


@contextmanager
def logs_on(console: Console) -> Iterator[None]:
    """Route the SDK's warnings and errors through `console` for the block's duration (with
    --log-level / --log-format: the lines that handler makes, at its level)."""
    installed = log_lines()
    if installed is not None:
        write = installed.write

        def above_the_bar(line: str) -> None:
            console.print(line, markup=False, highlight=False, soft_wrap=True)

        installed.write = above_the_bar
        try:
            yield
        finally:
            installed.write = write
        return
    logger = logging.getLogger(_SDK_LOGGER)
    handler = _ConsoleHandler(console)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # no second copy through the root logger (or its last resort)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


class LiveBar:
    """A rich `Progress` shown while the `with` block runs, with a last redraw at its end;
    subclasses build `_progress` and say in `refresh` what it shows."""

    _progress: Progress

    def refresh(self) -> None:
        """Push the counters to the display."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.refresh()
        self._progress.stop()


class BulkProgress(LiveBar):
    """Shows a `BulkCounts` as it changes."""

    def __init__(
        self, console: Console, counts: BulkCounts, total: int | None, *, description: str
    ) -> None:
        self._counts = counts
        self._started = time.monotonic()
        self._shown_at = 0.0
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8.0f}/s"),
            TextColumn(
                "[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/] "
                "[magenta]{task.fields[held]} held[/] {task.fields[stopped]} stopped "
                "[yellow]{task.fields[retries]} retries[/]"
            ),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=10,
            transient=False,
            disable=json_logs(),  # JSON lines only on stderr: the summary says the totals
        )
        self._task: TaskID = self._progress.add_task(
            description,
            total=total,
            ok=0,
            failed=0,
            held=0,
            stopped=0,
            retries=0,
            rate=0.0,
        )
        self._description = description

    def refresh_soon(self) -> None:
        """Redraw if the last redraw is more than a tenth of a second old."""
        now = time.monotonic()
        if now - self._shown_at >= _REFRESH_SECONDS:
            self._shown_at = now
            self.refresh()

    def refresh(self) -> None:
        """Push the counters to the display."""
        counts = self._counts
        done = counts.ok + counts.failed + counts.held  # stopped items are not done
        elapsed = time.monotonic() - self._started
        self._progress.update(
            self._task,
            completed=done,
            ok=counts.ok,
            failed=counts.failed,
            held=counts.held,
            stopped=counts.stopped,
            retries=counts.retries,
            rate=done / elapsed if elapsed > 0 else 0.0,
            # The adaptive limit goes with the description, which a narrow terminal keeps.
            description=self._description
            if counts.concurrency_limit is None
            else f"{self._description} (limit {counts.concurrency_limit})",
        )
