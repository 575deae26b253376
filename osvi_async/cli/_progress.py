"""The live progress bar of bulk runs: done/total, rate, ok, failed, held, retries (stderr).

It reads the run's one `BulkCounts` (totals are counted once, in the run) and redraws at
most 10 times a second. Its total is what this run means to send: records already done or
final in the report are not part of it, so a resumed run's bar ends at its total.
"""

from __future__ import annotations

import time
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

if TYPE_CHECKING:
    from osvi_async.cli._bulk_run import BulkCounts

_REFRESH_SECONDS: Final = 0.1


class BulkProgress:
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
        )
        self._task: TaskID = self._progress.add_task(
            description, total=total, ok=0, failed=0, held=0, stopped=0, retries=0, rate=0.0
        )

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
        )

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
