"""Holding and the on_send hook, against the emulator: what the server saw, and in which order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from osvi_async import (
    BulkSummary,
    EngineRejectedError,
    InjectOutcome,
    InjectRequest,
    ItemHeldError,
    NotFoundError,
    OsviClient,
    OsviError,
    RetryPolicy,
    ServerError,
)
from osvi_async.testing import OsviEmulator

POLICY = RetryPolicy(max_retries=2, initial_delay=0.001, max_delay=0.002)
"""3 attempts per item, millisecond backoff."""


async def run_all(
    emulator: OsviEmulator, items: object, **options: object
) -> tuple[dict[int, InjectOutcome], BulkSummary]:
    """Run inject_many to the end; the outcomes by index, and the summary."""
    async with (
        OsviClient(emulator.api_token, base_url=emulator.base_url, retry=POLICY) as client,
        client.inject_many(items, circuit_breaker=None, **options) as run,  # type: ignore[arg-type]
    ):
        outcomes = {outcome.index: outcome async for outcome in run}
    summary = run.summary
    assert not run.leftovers
    assert summary.items == (
        summary.succeeded + summary.failed + summary.held + summary.not_sent + summary.interrupted
    )
    return outcomes, summary


async def test_exhausted_retries_hold_the_rest_of_the_session(
    osvi_emulator: OsviEmulator,
) -> None:
    """Item 0 fails 3 transient attempts: its session's later items are held, never applied."""
    broken, fine = osvi_emulator.create_session(), osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(broken, ["unavailable"] * 3)
    items = [(broken if i % 2 == 0 else fine, f"entry {i}") for i in range(10)]
    outcomes, summary = await run_all(osvi_emulator, items)

    assert isinstance(outcomes[0].error, ServerError)
    for index in (2, 4, 6, 8):
        error = outcomes[index].error
        assert isinstance(error, ItemHeldError)
        assert error.waiting_for == 0
        assert not error.may_have_been_applied
        assert outcomes[index].attempts == 0
    assert all(outcomes[index].ok for index in (1, 3, 5, 7, 9))
    assert osvi_emulator.applied(broken) == ()
    assert osvi_emulator.requests_for(broken) == 3  # item 0's attempts, nothing else
    assert osvi_emulator.applied(fine) == tuple(f"entry {i}" for i in (1, 3, 5, 7, 9))
    assert (summary.succeeded, summary.failed, summary.held) == (5, 1, 4)


@pytest.mark.parametrize(
    ("break_it", "error_type"),
    [("closed", NotFoundError), ("engine_rejected", EngineRejectedError)],
)
async def test_a_refusal_for_good_holds_nothing(
    osvi_emulator: OsviEmulator, break_it: str, error_type: type[OsviError]
) -> None:
    """A 404 or an engine refusal fails that item only; the session's later items are sent."""
    session = osvi_emulator.create_session()
    if break_it == "closed":
        osvi_emulator.close_session(session)
    else:
        osvi_emulator.fault_plan.script(session, ["engine_rejected"])
    items = [(session, f"entry {i}") for i in range(4)]
    outcomes, summary = await run_all(osvi_emulator, items)

    assert isinstance(outcomes[0].error, error_type)
    assert summary.held == 0
    assert osvi_emulator.requests_for(session) == 4
    if break_it == "engine_rejected":
        assert osvi_emulator.applied(session) == ("entry 1", "entry 2", "entry 3")


async def test_hold_on_failure_false_sends_them_anyway(osvi_emulator: OsviEmulator) -> None:
    """hold_on_failure=False: after item 0 fails for now, items 1-3 are still sent and applied."""
    session = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session, ["unavailable"] * 3)
    items = [(session, f"entry {i}") for i in range(4)]
    outcomes, summary = await run_all(osvi_emulator, items, hold_on_failure=False)

    assert isinstance(outcomes[0].error, ServerError)
    assert all(outcomes[index].ok for index in (1, 2, 3))
    assert summary.held == 0
    assert osvi_emulator.applied(session) == ("entry 1", "entry 2", "entry 3")


async def test_items_pulled_after_the_failure_are_held_too(osvi_emulator: OsviEmulator) -> None:
    """Items of a blocked session pulled later (any spelling of its id) are held at once."""
    session = osvi_emulator.create_session()
    other = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session, ["unavailable"] * 3)
    first_failed = asyncio.Event()

    async def produce() -> AsyncIterator[InjectRequest]:
        yield InjectRequest(session, "first")
        await first_failed.wait()
        yield InjectRequest(session.upper(), "later, other spelling")
        yield InjectRequest(other, "other session")
        yield InjectRequest(session, "resent", may_have_been_applied=True)

    received: list[InjectOutcome] = []
    async with (
        OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=POLICY) as c,
        c.inject_many(produce(), circuit_breaker=None, retry_budget=None) as run,
    ):
        async for outcome in run:
            received.append(outcome)
            if outcome.index == 0:
                first_failed.set()
    by_index = {outcome.index: outcome for outcome in received}

    assert not by_index[0].ok
    for index in (1, 3):
        error = by_index[index].error
        assert isinstance(error, ItemHeldError)
        assert error.waiting_for == 0
    held = by_index[3].error
    assert held is not None
    assert held.may_have_been_applied  # the request said an earlier run may have applied it
    assert by_index[2].ok
    assert osvi_emulator.applied(session) == ()
    assert osvi_emulator.requests_for(session) == 3
    assert run.summary.held == 2


async def test_on_send_runs_before_the_server_sees_the_request(
    osvi_emulator: OsviEmulator,
) -> None:
    """on_send(i) runs once per sent item, before any byte of it; never for held or invalid."""
    ordered, broken = osvi_emulator.create_session(), osvi_emulator.create_session()
    # Item 0 is retried once (one call, two requests); `broken` fails for good-for-now.
    osvi_emulator.fault_plan.script(ordered, ["engine_error"])
    osvi_emulator.fault_plan.script(broken, ["unavailable"] * 3)
    items: list[object] = [(ordered, f"entry {i}") for i in range(5)]
    items += [(ordered, "   "), (broken, "fails"), (broken, "held")]
    seen_at_hook: dict[int, int] = {}

    def on_send(index: int) -> None:
        assert index not in seen_at_hook
        seen_at_hook[index] = osvi_emulator.requests_for(ordered)

    outcomes, _ = await run_all(osvi_emulator, items, on_send=on_send)

    assert sorted(seen_at_hook) == [0, 1, 2, 3, 4, 6]  # not the invalid 5, not the held 7
    # Entry i is sent after entries 0..i-1 (item 0 took 2 requests): the server had seen
    # only those when the hook ran.
    assert [seen_at_hook[i] for i in range(5)] == [0, 2, 3, 4, 5]
    assert isinstance(outcomes[7].error, ItemHeldError)
    assert osvi_emulator.applied(ordered) == tuple(f"entry {i}" for i in range(5))


async def test_on_send_raising_fails_the_item_unsent(osvi_emulator: OsviEmulator) -> None:
    """An exception from on_send fails that item, unsent, and holds its session."""
    session = osvi_emulator.create_session()

    def on_send(index: int) -> None:
        if index == 1:
            raise OSError("intent log full")

    items = [(session, f"entry {i}") for i in range(3)]
    outcomes, _ = await run_all(osvi_emulator, items, on_send=on_send)

    error = outcomes[1].error
    assert error is not None
    assert "on_send" in str(error)
    assert isinstance(error.__cause__, OSError)
    assert not error.may_have_been_applied
    assert outcomes[1].attempts == 0
    assert isinstance(outcomes[2].error, ItemHeldError)
    assert osvi_emulator.applied(session) == ("entry 0",)
    assert osvi_emulator.requests_for(session) == 1
