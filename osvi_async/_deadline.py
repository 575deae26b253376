"""A per-attempt deadline that is cheap enough to run on every request.

`asyncio.timeout()` does what an attempt needs: it cancels the task when the time is up and
turns that cancellation (and only that one) into `TimeoutError`, telling it apart from a
`cancel()` by someone else through `Task.cancelling()`. But it is an async context manager
with a state machine, about 4 us per request on the benchmark machine, as much as decoding
the answer. `Deadline` keeps exactly its rules with a plain `with` block.

What is left is the timer, and one timer per request is itself a cost: on uvloop each is a
libuv timer (allocated, started, stopped, closed), on asyncio a heap entry. A `DeadlineWheel`
shares one timer among all deadlines that fall due in the same 1/64 s slot: a deadline of
`SHARED_FROM` seconds or more is rounded *up* to the end of its slot, so it fires up to
`SLOT_SECONDS` late and never early. At thousands of requests a second that is one timer per
slot instead of one per request. Shorter deadlines keep an exact timer of their own: for
them 15 ms would be a visible share of the timeout.
"""

from __future__ import annotations

import asyncio
from math import ceil
from types import TracebackType
from typing import Final

SLOTS_PER_SECOND: Final = 64
SLOT_SECONDS: Final = 1 / SLOTS_PER_SECOND
"""How late a shared deadline may fire: 15.625 ms (a power of two, so slot times are exact)."""
SHARED_FROM: Final = 1.0
"""Deadlines of at least this many seconds share slot timers; shorter ones are exact."""


class DeadlineWheel:
    """The shared slot timers of one event loop's deadlines (a transport keeps one).

    A slot's timer is armed by the first deadline that lands in it and cancelled when the
    last one leaves early, so nothing (no timer, no set) outlives the requests; when it fires
    it expires the deadlines still in the slot. Deadlines shorter than `shared_from` seconds
    are left to keep their own exact timer.
    """

    __slots__ = ("_loop", "_shared_from", "_slots")

    def __init__(self, *, shared_from: float = SHARED_FROM) -> None:
        self._shared_from = shared_from
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: dict[int, _Slot] = {}

    def join(self, deadline: Deadline, loop: asyncio.AbstractEventLoop) -> bool:
        """Put `deadline` in the slot its end falls in; False when it must keep a timer of
        its own (shorter than `shared_from`, or this wheel's deadlines run on another loop)."""
        seconds = deadline._seconds
        if seconds < self._shared_from:
            return False
        if self._loop is not loop and not self._adopt(loop):
            return False
        key = ceil((loop.time() + seconds) * SLOTS_PER_SECOND)
        members = self._slots.get(key)
        if members is None:
            members = self._slots[key] = _Slot()
            members.handle = loop.call_at(key / SLOTS_PER_SECOND, self._fire, key, members)
        members.add(deadline)
        deadline._members = members
        deadline._key = key
        return True

    def leave(self, deadline: Deadline, members: _Slot) -> None:
        """`deadline` ended in time: out of its slot, and the slot's timer off if it was last."""
        members.discard(deadline)
        if not members:
            members.handle.cancel()
            if self._slots.get(deadline._key) is members:
                del self._slots[deadline._key]

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Move to `loop` unless deadlines on the previous one are still running."""
        if any(self._slots.values()):
            return False
        self._loop = loop
        self._slots = {}
        return True

    def _fire(self, key: int, members: _Slot) -> None:
        if self._slots.get(key) is members:
            del self._slots[key]
        for deadline in members:
            deadline._expire()


class _Slot(set["Deadline"]):
    """The deadlines due in one slot, and the timer that expires them."""

    __slots__ = ("handle",)
    handle: asyncio.TimerHandle


def slot_end(when: float) -> float:
    """When the shared timer of a deadline due at loop time `when` fires: the end of its
    1/64 s slot, never before `when` and less than `SLOT_SECONDS` after it."""
    return ceil(when * SLOTS_PER_SECOND) / SLOTS_PER_SECOND


class Deadline:
    """`with Deadline(seconds):` inside a task: `TimeoutError` if the block outlives it.

    A `CancelledError` that the deadline did not cause (a `cancel()` from outside, even one
    that lands in the same loop turn as the timer) propagates unchanged; the task's cancel
    count is left as `asyncio.timeout` leaves it. With a `wheel`, a deadline of its
    `shared_from` seconds or more fires up to `SLOT_SECONDS` late (never early); without one,
    or shorter, it fires on time.
    """

    __slots__ = (
        "_cancelling",
        "_expired",
        "_handle",
        "_key",
        "_members",
        "_seconds",
        "_task",
        "_wheel",
    )

    def __init__(self, seconds: float, wheel: DeadlineWheel | None = None) -> None:
        self._seconds = seconds
        self._wheel = wheel
        self._expired = False
        self._members: _Slot | None = None
        self._key = 0
        self._handle: asyncio.TimerHandle | None = None

    def __enter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        loop = asyncio.get_running_loop()
        wheel = self._wheel
        if wheel is None or not wheel.join(self, loop):
            self._handle = loop.call_at(loop.time() + self._seconds, self._expire)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._expired:
            if self._members is not None:
                self._wheel.leave(self, self._members)  # type: ignore[union-attr] # joined one
            elif self._handle is not None:
                self._handle.cancel()
            return
        # Our cancel() was counted: take it back. Only if no one else asked for a cancel
        # since we entered is the CancelledError ours to turn into a timeout.
        if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()
