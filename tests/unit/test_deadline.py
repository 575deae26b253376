"""Deadline keeps asyncio.timeout's rules, with its own timer or a shared slot timer."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from osvi_async import OsviClient
from osvi_async._deadline import SLOT_SECONDS, Deadline, DeadlineWheel, slot_end

SHORT = 0.03  # seconds: long enough to enter, short enough for a fast test

Guard = Callable[[float], contextlib.AbstractAsyncContextManager[Any]]


@contextlib.asynccontextmanager
async def exact(seconds: float) -> Any:
    """A Deadline with its own timer."""
    with Deadline(seconds):
        yield


@contextlib.asynccontextmanager
async def shared(seconds: float) -> Any:
    """A Deadline on a wheel that shares slot timers whatever the length."""
    with Deadline(seconds, DeadlineWheel(shared_from=0.0)):
        yield


GUARDS = pytest.mark.parametrize("guard", [asyncio.timeout, exact, shared])


def cancels_requested() -> int:
    """How many cancels of the current task are pending (`Task.cancelling`)."""
    task = asyncio.current_task()
    assert task is not None
    return task.cancelling()


def spin_until(loop: asyncio.AbstractEventLoop, moment: float) -> None:
    """Hold the loop until its clock reaches `moment`, so every timer due by then is ready."""
    while loop.time() < moment:
        pass


@GUARDS
async def test_a_block_that_ends_in_time_is_left_alone(guard: Guard) -> None:
    """A block that finishes before its deadline returns normally, the task not cancelling."""
    async with guard(5.0):
        await asyncio.sleep(0)
    await asyncio.sleep(SHORT)  # a timer left behind would cancel us here
    assert cancels_requested() == 0


@GUARDS
async def test_a_block_that_outlives_its_deadline_times_out_never_early(guard: Guard) -> None:
    """TimeoutError once the deadline has passed (not before), and no cancel is left over."""
    loop = asyncio.get_running_loop()
    entered = loop.time()
    with pytest.raises(TimeoutError):
        async with guard(SHORT):
            await asyncio.sleep(10)
    assert loop.time() >= entered + SHORT
    assert cancels_requested() == 0
    await asyncio.sleep(0)  # no cancel pending either


@GUARDS
async def test_a_cancel_landing_with_the_timer_stays_a_cancel(guard: Guard) -> None:
    """cancel() and the deadline's timer in one loop turn: CancelledError, one cancel counted."""
    loop = asyncio.get_running_loop()
    outcome: list[str] = []
    cancelling: list[int] = []

    async def attempt() -> None:
        try:
            async with guard(SHORT):
                await asyncio.sleep(10)
        except TimeoutError:
            outcome.append("TimeoutError")
        except asyncio.CancelledError:
            outcome.append("CancelledError")
            current = asyncio.current_task()
            assert current is not None
            cancelling.append(current.cancelling())
            raise

    task = asyncio.create_task(attempt())
    await asyncio.sleep(0)  # entered: the deadline's timer is armed
    # Due after the deadline's timer, shared or not; the loop is held until both are due, so
    # they run in one turn, the timer first, before the task can see either.
    cancel_at = loop.time() + SHORT + SLOT_SECONDS + 0.002
    loop.call_at(cancel_at, task.cancel)
    loop.call_soon(spin_until, loop, cancel_at + 0.001)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcome == ["CancelledError"]
    assert cancelling == [1]


@GUARDS
async def test_a_cancel_before_the_timer_is_not_a_timeout(guard: Guard) -> None:
    """An outside cancel() while the deadline is still far: CancelledError, nothing fires later."""
    task = asyncio.create_task(_sleep_under(guard, 0.05))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.06)  # the (shared) timer, if still armed, must find nothing to cancel


async def _sleep_under(guard: Guard, seconds: float) -> None:
    async with guard(seconds):
        await asyncio.sleep(10)


async def test_deadlines_due_in_one_slot_share_one_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many deadlines entered at once arm one timer (two if a slot boundary falls between),
    and each of them times out."""
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    call_at = loop.call_at

    def counting_call_at(
        when: float, callback: Any, *args: Any, **kwargs: Any
    ) -> asyncio.TimerHandle:
        armed.append(when)
        return call_at(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counting_call_at)
    wheel = DeadlineWheel(shared_from=0.0)

    async def attempt() -> str:
        try:
            with Deadline(SHORT, wheel):
                await asyncio.sleep(10)
        except TimeoutError:
            return "TimeoutError"
        return "returned"

    outcomes = await asyncio.gather(*(attempt() for _ in range(50)))
    assert outcomes == ["TimeoutError"] * 50
    assert 1 <= len([when for when in armed if when * 64 == int(when * 64)]) <= 2


async def test_a_slot_whose_deadlines_ended_still_serves_new_ones() -> None:
    """Deadlines that ended early leave their slot; one joining it later still times out."""
    wheel = DeadlineWheel(shared_from=0.0)
    for _ in range(3):
        with Deadline(SHORT, wheel):
            await asyncio.sleep(0)
    with pytest.raises(TimeoutError), Deadline(SHORT, wheel):
        await asyncio.sleep(10)


async def test_short_deadlines_keep_their_own_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Below the wheel's shared_from a deadline is exact: its timer is due at entry + seconds."""
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    call_at = loop.call_at

    def recording_call_at(
        when: float, callback: Any, *args: Any, **kwargs: Any
    ) -> asyncio.TimerHandle:
        armed.append(when)
        return call_at(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", recording_call_at)
    before = loop.time()
    with Deadline(0.5, DeadlineWheel()):
        after = loop.time()
    assert len(armed) == 1  # nothing else armed a timer while the block ran
    assert before + 0.5 <= armed[0] <= after + 0.5


def test_a_wheel_moves_to_a_new_loop_once_the_old_one_is_done() -> None:
    """A wheel used on one loop and then another still times deadlines out on the second."""
    wheel = DeadlineWheel(shared_from=0.0)

    async def times_out() -> bool:
        try:
            with Deadline(SHORT, wheel):
                await asyncio.sleep(10)
        except TimeoutError:
            return True
        return False

    assert asyncio.run(times_out())
    assert asyncio.run(times_out())


@given(st.floats(min_value=0.0, max_value=10.0**7, allow_nan=False))
def test_a_shared_timer_fires_at_or_after_the_deadline_within_one_slot(when: float) -> None:
    """The slot end is never before the deadline and at most one slot after it."""
    end = slot_end(when)
    assert when <= end <= when + SLOT_SECONDS


async def test_the_client_times_out_on_a_shared_timer(unused_tcp_port: int) -> None:
    """An attempt of a second or more against a server that never answers: APITimeoutError,
    sent, after its timeout and at most one slot later (plus scheduling)."""
    accepted: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read(65536)

    server = await asyncio.start_server(hold, "127.0.0.1", unused_tcp_port)
    loop = asyncio.get_running_loop()
    from osvi_async import APITimeoutError, RetryPolicy

    async with (
        server,
        OsviClient(
            "0123456789abcdef",
            base_url=f"http://127.0.0.1:{unused_tcp_port}",
            timeout=1.0,
            retry=RetryPolicy(max_retries=0),
        ) as client,
    ):
        started = loop.time()
        with pytest.raises(APITimeoutError) as caught:
            await client.inject_context(str(uuid.uuid4()), "x")
        assert loop.time() >= started + 1.0
        assert caught.value.request_sent
        for writer in accepted:
            writer.close()
