"""The `osvi-async` command line (install the `cli` extra: `pip install 'osvi-async[cli]'`).

This module is the entry point and stays light on purpose: `main` installs the SIGINT and
SIGTERM handlers before anything else is imported (click, rich and the commands take a
noticeable fraction of a second to import), so a signal at any moment ends the process with
one line on stderr and exit 130 or 143, never a traceback or a silent death. While a bulk run
is in its loop, its own handlers take over to drain it gracefully, then hand back to these;
they stay in place until the process ends (`exit_now`).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from types import FrameType
from typing import Final

STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
_SHOW_CURSOR: Final = b"\x1b[?25h"  # a live progress bar hides it on a terminal
_stop_note: str | None = None


def set_stop_note(note: str | None) -> None:
    """What a stop signal's line adds from now on (None: nothing).

    A command sets it right before a state-changing request may go out: a stop then cannot
    say whether the request was applied, so its line says it may have been, and how to check.
    """
    global _stop_note  # noqa: PLW0603 - read by the signal handler, which takes no arguments
    _stop_note = note


def request_started() -> bool:
    """Whether a state-changing request may have gone out (a stop note is set)."""
    return _stop_note is not None


def stop_now(signum: int, frame: FrameType | None = None) -> None:
    """Exit at once with one line: `error: stopped by SIGINT` (130) or `SIGTERM` (143).

    While a state-changing request may be in flight, the line goes on with the note its
    command set (`set_stop_note`): that it may have been applied, and how to check.

    Exits with `os._exit`, so no exception travels through whatever code the signal
    interrupted (an import, a `finally`, the interpreter's shutdown). What was already
    written to the report stays valid: it is appended one whole line per write.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # noqa: S112 - a flush the signal interrupted; exit anyway
            continue
    name = signal.Signals(signum).name
    try:
        if os.isatty(2):
            os.write(2, _SHOW_CURSOR)
        note = f"; {_stop_note}" if _stop_note else ""
        os.write(2, f"error: stopped by {name}{note}\n".encode(errors="backslashreplace"))
    finally:
        os._exit(128 + signum)


def install_stop_handlers() -> None:
    """SIGINT and SIGTERM end the process with `stop_now` (outside a bulk run's loop)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop_now)


def exit_now(code: int) -> None:
    """End the process with `code`, keeping the stop handlers to the very end.

    `sys.exit` would hand the process to the interpreter's teardown, which first restores
    the default handlers and then takes tens of milliseconds (garbage collection, module
    teardown): a signal then would kill the process silently with a negative status. So
    the exit hooks (logging, coverage) run here, with the handlers still in place (a signal
    during them ends the process with `stop_now`'s one line), the output is flushed, and the
    process ends with `os._exit`: there is nothing left to tear down.
    """
    install_stop_handlers()
    try:
        atexit._run_exitfuncs()  # what the interpreter's teardown would run first
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except Exception:  # noqa: S112 - a closed pipe: nothing more to tell anyone
                continue
        os._exit(code)


def main() -> None:
    """Entry point of the `osvi-async` script."""
    install_stop_handlers()
    try:
        from osvi_async.cli._app import run  # noqa: PLC0415 - optional deps, loaded late
    except ImportError as error:  # click or rich missing
        sys.exit(
            f"osvi-async: the command line needs the 'cli' extra ({error.name} is missing): "
            "pip install 'osvi-async[cli]'"
        )
    exit_now(run())


__all__ = [
    "STOP_SIGNALS",
    "exit_now",
    "install_stop_handlers",
    "main",
    "set_stop_note",
    "stop_now",
]
