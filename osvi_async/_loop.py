"""Running a coroutine on the event loop we choose, where osvi-async owns the loop.

The SDK itself runs on whatever loop its caller runs. Where osvi-async starts the loop itself
(the `osvi-async` commands, the demo, the worker, `python -m osvi_async.testing`), it uses
uvloop when uvloop is installed (the `fast` extra): uvloop's loop, written on libuv in
Cython, spends less CPU per request on scheduling callbacks and reading sockets than
asyncio's own, so the same work needs fewer cores (docs/performance.md has the figures).

The choice is `"auto"` (uvloop when importable, else asyncio), `"asyncio"` or `"uvloop"`
(required: an error when it is missing, rather than a silently slower run), given as an
argument or else read from `$OSVI_EVENT_LOOP`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, Final, Literal, TypeVar, cast, get_args

from osvi_async.errors import ClientValidationError

__all__ = [
    "EVENT_LOOP_CHOICES",
    "EVENT_LOOP_ENV",
    "EventLoopChoice",
    "EventLoopName",
    "choose_event_loop",
    "event_loop_name",
    "run",
]

T = TypeVar("T")

EventLoopChoice = Literal["auto", "asyncio", "uvloop"]
EventLoopName = Literal["asyncio", "uvloop"]
EVENT_LOOP_CHOICES: Final[tuple[EventLoopChoice, ...]] = get_args(EventLoopChoice)
EVENT_LOOP_ENV: Final = "OSVI_EVENT_LOOP"

logger: Final = logging.getLogger("osvi_async.loop")


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None when uvloop cannot be imported."""
    try:
        import uvloop  # noqa: PLC0415 - optional: the `fast` extra
    except ImportError:
        return None
    return cast("Callable[[], asyncio.AbstractEventLoop]", uvloop.new_event_loop)


def _resolve(
    choice: str | None,
) -> tuple[EventLoopName, Callable[[], asyncio.AbstractEventLoop] | None]:
    """The loop `choice` means, and the factory that builds it (None: asyncio's default)."""
    source = "event loop"
    if choice is None:
        # An empty variable counts as unset, as click reads it for `--loop`.
        choice, source = os.environ.get(EVENT_LOOP_ENV) or "auto", EVENT_LOOP_ENV
    if choice not in EVENT_LOOP_CHOICES:
        raise ClientValidationError(
            f"{source} must be one of {', '.join(EVENT_LOOP_CHOICES)}, got {choice!r}"
        )
    if choice == "asyncio":
        return "asyncio", None
    factory = _uvloop_factory()
    if factory is not None:
        return "uvloop", factory
    if choice == "uvloop":
        raise ClientValidationError(
            "event loop uvloop is not installed: pip install 'osvi-async[fast]', "
            "or choose auto or asyncio"
        )
    return "asyncio", None


def choose_event_loop(choice: str | None = None) -> EventLoopName:
    """The loop `run` uses for `choice`: "uvloop" or "asyncio".

    Args:
        choice: "auto" (uvloop when importable, else asyncio), "asyncio" or "uvloop"; None
            reads `$OSVI_EVENT_LOOP` (unset or empty: "auto").

    Raises:
        ClientValidationError: Another value, or "uvloop" when uvloop cannot be imported.
    """
    return _resolve(choice)[0]


def run(main: Coroutine[Any, Any, T], *, event_loop: str | None = None) -> T:
    """Run `main` to completion on a new loop, as `asyncio.run` does, and return its result.

    Everything but the loop's class is `asyncio.run`'s: tasks still pending when `main`
    returns are cancelled and awaited, async generators are finalised, the default executor
    is shut down, and the loop is closed. The loop's name is logged at DEBUG on the
    `osvi_async.loop` logger ("event loop: uvloop"), so a log shows what a run measured.

    Args:
        main: The coroutine to run.
        event_loop: "auto", "asyncio" or "uvloop" (see `choose_event_loop`); None reads
            `$OSVI_EVENT_LOOP`.

    Raises:
        ClientValidationError: An unknown choice, or "uvloop" when it is not installed; `main`
            is closed unstarted.
        RuntimeError: Called from a running event loop (as `asyncio.run`).
    """
    try:
        _refuse_running_loop()
        _, factory = _resolve(event_loop)
    except BaseException:
        main.close()  # never started: no "coroutine was never awaited" warning
        raise
    # Without a factory the Runner makes the loop exactly as asyncio.run does.
    with asyncio.Runner(loop_factory=factory) as runner:
        logger.debug(
            "event loop: %s", event_loop_name(runner.get_loop()), extra={"event": "event_loop"}
        )
        return runner.run(main)


def _refuse_running_loop() -> None:
    """A loop already running in this thread cannot run another one (as `asyncio.run`)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError("run() cannot be called from a running event loop")


def event_loop_name(loop: asyncio.AbstractEventLoop | None = None) -> EventLoopName:
    """Which loop `loop` (by default the running one) is: "uvloop", else "asyncio".

    Raises:
        RuntimeError: No `loop` given and no loop running in this thread.
    """
    running = loop if loop is not None else asyncio.get_running_loop()
    return "uvloop" if type(running).__module__.partition(".")[0] == "uvloop" else "asyncio"
