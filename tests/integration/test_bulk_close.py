"""A bulk run whose client is closed under it, and items whose strings are str subclasses."""

from __future__ import annotations

import asyncio
import logging

import pytest

from osvi_async import ClientClosedError, InjectOutcome, InjectRequest, OsviClient, RetryPolicy
from osvi_async.testing import FaultPlan, OsviEmulator

FAST = RetryPolicy(initial_delay=0.001, max_delay=0.002)


async def test_closing_the_client_stops_the_run_and_accounts_for_every_item(
    osvi_emulator: OsviEmulator,
) -> None:
    """client.close() mid-run, more workers than connections: the run ends, all accounted."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=0.05)
    sessions = [osvi_emulator.create_session() for _ in range(20)]
    items = [(sessions[i % 20], f"entry {i}") for i in range(200)]
    client = OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, max_connections=4, retry=FAST
    )
    run = client.inject_many(items, concurrency=16)
    outcomes: list[InjectOutcome] = []

    async def consume() -> None:
        async for outcome in run:
            outcomes.append(outcome)

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    await client.close()
    requests_at_close = osvi_emulator.stats.requests_total
    await asyncio.wait_for(consumer, timeout=5)  # ends by itself; raises nothing
    summary = run.summary
    assert summary.items == (
        summary.succeeded + summary.failed + summary.held + summary.not_sent + summary.interrupted
    )
    indexes = sorted([o.index for o in outcomes] + [o.index for o in run.leftovers])
    assert indexes == list(range(summary.items))
    assert any(isinstance(o.error, ClientClosedError) for o in outcomes)
    assert summary.succeeded > 0
    await asyncio.sleep(0.1)
    assert osvi_emulator.stats.requests_total == requests_at_close
    for session in sessions:  # what landed, landed in input order
        applied = [int(text.split()[1]) for text in osvi_emulator.applied(session)]
        assert applied == sorted(applied)


class _Sneaky(str):
    """A str whose own methods lie: another lane key each time, and a forged log line."""

    calls = 0

    def lower(self) -> str:
        _Sneaky.calls += 1
        return f"lane-{_Sneaky.calls}"

    def __format__(self, spec: str) -> str:
        return "NOT-THE-REAL-ID\nFORGED LOG LINE"


async def test_str_subclass_items_keep_one_lane_and_cannot_forge_logs(
    osvi_emulator: OsviEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A session id that is a lying str subclass: one lane, input order, honest log lines."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=(0.0, 0.02))
    session = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session, ["engine_error"])  # one retry: one INFO log line
    items = [InjectRequest(_Sneaky(session), f"entry {i}") for i in range(5)]
    caplog.set_level(logging.INFO, logger="osvi_async")
    async with (
        OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=FAST) as client,
        client.inject_many(items) as run,
    ):
        outcomes = [outcome async for outcome in run]
    assert all(outcome.ok for outcome in outcomes)
    assert osvi_emulator.applied(session) == tuple(f"entry {i}" for i in range(5))
    assert all(type(o.request.session_id) is str for o in outcomes if o.request is not None)
    assert "FORGED" not in caplog.text
    assert "retrying" in caplog.text
