"""`osvi_async._loop.run`: the loop it picks, and `asyncio.run`'s semantics on both loops."""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import time
from collections.abc import AsyncIterator

import pytest

from osvi_async import ClientValidationError
from osvi_async._loop import EVENT_LOOP_ENV, choose_event_loop, event_loop_name, run

LOOPS = ["asyncio", "uvloop"]


async def _running_loop() -> str:
    return event_loop_name()


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop cannot be imported (as where the `fast` extra is not installed)."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


@pytest.fixture(autouse=True)
def _no_env_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)


@pytest.mark.parametrize("choice", LOOPS)
def test_runs_on_the_chosen_loop(choice: str) -> None:
    """The asyncio choice runs asyncio's loop, uvloop uvloop's; the result comes back."""
    assert run(_running_loop(), event_loop=choice) == choice


def test_auto_prefers_uvloop_when_importable() -> None:
    """Auto (and no choice at all) runs on uvloop when it can be imported."""
    assert run(_running_loop(), event_loop="auto") == "uvloop"
    assert run(_running_loop()) == "uvloop"


@pytest.mark.usefixtures("no_uvloop")
def test_auto_falls_back_to_asyncio_without_uvloop() -> None:
    """Auto without uvloop runs on asyncio's loop."""
    assert choose_event_loop("auto") == "asyncio"
    assert run(_running_loop()) == "asyncio"


@pytest.mark.usefixtures("no_uvloop")
def test_uvloop_required_but_missing_is_a_validation_error() -> None:
    """Requiring uvloop without it: ClientValidationError saying what to install; main unrun."""
    main = _running_loop()
    with pytest.raises(ClientValidationError, match=r"pip install 'osvi-async\[fast\]'"):
        run(main, event_loop="uvloop")
    assert inspect.getcoroutinestate(main) == inspect.CORO_CLOSED


@pytest.mark.parametrize("choice", LOOPS)
def test_the_environment_variable_chooses_without_an_argument(
    monkeypatch: pytest.MonkeyPatch, choice: str
) -> None:
    """$OSVI_EVENT_LOOP picks the loop when no argument does; an argument overrides it."""
    monkeypatch.setenv(EVENT_LOOP_ENV, choice)
    assert run(_running_loop()) == choice
    other = "asyncio" if choice == "uvloop" else "uvloop"
    assert run(_running_loop(), event_loop=other) == other


def test_an_unknown_choice_is_refused_naming_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value in the variable or the argument: ClientValidationError naming where it came
    from; the coroutine is closed unstarted."""
    monkeypatch.setenv(EVENT_LOOP_ENV, "bogus")
    main = _running_loop()
    with pytest.raises(ClientValidationError, match=r"OSVI_EVENT_LOOP must be one of .* 'bogus'"):
        run(main)
    assert inspect.getcoroutinestate(main) == inspect.CORO_CLOSED
    with pytest.raises(ClientValidationError, match=r"event loop must be one of .* 'tokio'"):
        choose_event_loop("tokio")


@pytest.mark.parametrize("choice", LOOPS)
def test_leftovers_are_cleaned_up_as_asyncio_run_does(choice: str) -> None:
    """Pending tasks are cancelled, async generators closed, the executor's work waited for."""
    seen: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("task cancelled")
            raise

    async def numbers() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            seen.append("generator closed")

    def slow() -> None:
        time.sleep(0.05)
        seen.append("executor work done")

    async def main() -> int:
        loop = asyncio.get_running_loop()
        task = loop.create_task(forever())
        await asyncio.sleep(0)  # the task starts waiting
        generator = numbers()
        assert await anext(generator) == 1
        loop.run_in_executor(None, slow)
        return 7 if not task.done() else 0

    assert run(main(), event_loop=choice) == 7
    assert sorted(seen) == ["executor work done", "generator closed", "task cancelled"]


@pytest.mark.parametrize("choice", LOOPS)
def test_an_exception_from_main_propagates(choice: str) -> None:
    """What main raises comes out of run unchanged."""

    async def main() -> None:
        raise LookupError("from main")

    with pytest.raises(LookupError, match="from main"):
        run(main(), event_loop=choice)


async def test_refused_inside_a_running_loop() -> None:
    """Inside a running loop, run raises RuntimeError (as asyncio.run) and closes main."""
    main = _running_loop()
    with pytest.raises(RuntimeError, match="running event loop"):
        run(main, event_loop="asyncio")
    assert inspect.getcoroutinestate(main) == inspect.CORO_CLOSED


@pytest.mark.parametrize("choice", LOOPS)
def test_the_loop_is_logged_at_debug(caplog: pytest.LogCaptureFixture, choice: str) -> None:
    """One DEBUG record on osvi_async.loop names the loop the run is on."""
    with caplog.at_level(logging.DEBUG, logger="osvi_async.loop"):
        run(_running_loop(), event_loop=choice)
    assert [r.getMessage() for r in caplog.records if r.name == "osvi_async.loop"] == [
        f"event loop: {choice}"
    ]


def test_event_loop_name_of_a_loop_not_running() -> None:
    """A loop passed in is named without running it; asyncio's own is "asyncio"."""
    loop = asyncio.new_event_loop()
    try:
        assert event_loop_name(loop) == "asyncio"
    finally:
        loop.close()
    with pytest.raises(RuntimeError):
        event_loop_name()
