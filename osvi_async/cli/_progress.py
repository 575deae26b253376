"""The live progress bar of bulk runs: done/total, rate, ok, failed, retries (on stderr)."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class BulkProgress:
    """Counts outcomes and shows them; refreshes at most 10 times a second."""

    def __init__(self, console: Console, total: int | None, *, description: str) -> None:
        self.ok = 0
        self.failed = 0
        self.retries = 0
        self._started = time.monotonic()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8.0f}/s"),
            TextColumn(
                "[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/] "
                "[yellow]{task.fields[retries]} retries[/]"
            ),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=10,
            transient=False,
        )
        self._task: TaskID = self._progress.add_task(
            description, total=total, ok=0, failed=0, retries=0, rate=0.0
        )

    @property
    def done(self) -> int:
        """Items finished so far."""
        return self.ok + self.failed

    def record(self, *, ok: bool, retries: int = 0) -> None:
        """Count one finished item."""
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        self.retries += retries
        if self.done % 64 == 0:
            self.refresh()

    def refresh(self) -> None:
        """Push the counters to the display."""
        elapsed = time.monotonic() - self._started
        self._progress.update(
            self._task,
            completed=self.done,
            ok=self.ok,
            failed=self.failed,
            retries=self.retries,
            rate=self.done / elapsed if elapsed > 0 else 0.0,
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
