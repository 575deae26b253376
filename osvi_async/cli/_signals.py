"""SIGINT and SIGTERM stop a bulk run gracefully: the first drains it, a second stops it at once.

Inside the running loop the handlers are installed with `loop.add_signal_handler`, so a signal
never interrupts the code between two statements: it only asks the run to drain. Before and
after the loop, the entry point's handlers (`osvi_async.cli.stop_now`) end the process at once
with one line and exit 130 or 143: nothing is in flight then.
"""

from __future__ import annotations

import asyncio
import math
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from osvi_async.cli import STOP_SIGNALS, install_stop_handlers


class Drainable(Protocol):
    """What a stop asks of a run (`BulkRun.drain`)."""

    def drain(self, grace: float = 10.0) -> None: ...


def signal_name(signum: int) -> str:
    """SIGINT, SIGTERM, ..."""
    return signal.Signals(signum).name


def exit_code(signum: int) -> int:
    """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + signum


class GracefulStop:
    """Counts stop signals and drains the run: `grace` seconds on the first, 0 on the next."""

    def __init__(self, grace: float, notice: Callable[[str], None] | None = None) -> None:
        self.grace = grace
        self._notice = notice
        self.signum: int | None = None  # the first stop signal received
        self.signals = 0
        self._run: Drainable | None = None

    def attach(self, run: Drainable) -> None:
        """Drain this run on signals (at once if one already came)."""
        self._run = run
        if self.signals:
            run.drain(self.grace if self.signals == 1 else 0.0)

    def __call__(self, signum: int) -> None:
        """The loop's handler for a stop signal."""
        self.signals += 1
        if self.signum is None:
            self.signum = signum
        if self._run is not None:
            self._run.drain(self.grace if self.signals == 1 else 0.0)
        if self._notice is not None:
            name = signal_name(signum)
            wait = "as long as they need" if math.isinf(self.grace) else f"up to {self.grace:g} s"
            self._notice(
                f"{name}: stopping; items in flight get {wait} to finish "
                "(signal again to stop at once)"
                if self.signals == 1
                else f"{name}: stopping at once"
            )

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM on the running loop for the duration of the block."""
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self, signum)
        try:
            yield
        finally:
            # remove_signal_handler restores the defaults: held back in this thread until
            # the entry point's handlers are back, a signal then is not a silent death.
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                for signum in STOP_SIGNALS:
                    loop.remove_signal_handler(signum)
                install_stop_handlers()
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class SignalActions:
    """What a stop signal does to something that is not a bulk run (a worker, a publish loop).

    Attached to a `GracefulStop` in place of a run: `first` runs on the first signal (a
    graceful stop), `again` on every later one (stop at once).
    """

    def __init__(
        self, stop: GracefulStop, *, first: Callable[[], None], again: Callable[[], None]
    ) -> None:
        """Run `first` or `again` as `stop` counts its signals."""
        self._stop = stop
        self._first = first
        self._again = again

    def drain(self, grace: float = 10.0) -> None:
        """Called by `GracefulStop` on each signal (`grace` is the stop's own business)."""
        (self._first if self._stop.signals <= 1 else self._again)()
