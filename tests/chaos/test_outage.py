"""Scenario 2: outages. A window of a few seconds in the middle of a bulk run, then recovery;
and an outage that lasts the whole run, which must cost at most 2 requests per item (with
holding off) or hold every session after its first failed item (the default).

The bound asserted is the retry budget's (docs/bulk.md): a run of N items with S successes
sends at most N * (1 + per_request) + S * per_success requests, 2N + S with the defaults.
"""

from __future__ import annotations

import math
import time

import pytest

from osvi_async import (
    CircuitBreaker,
    CircuitOpenError,
    ItemHeldError,
    OsviClient,
    RetryPolicy,
    ServerError,
)
from osvi_async.testing import FaultPlan, OsviEmulator
from tests.chaos._harness import audit, injected, open_fds, run_bulk, settle, spread_items
from tests.chaos._report import Recorder

ITEMS = 3000
SESSIONS = 40
CONCURRENCY = 32
OUTAGE_SECONDS = 2.0
OUTAGE_AFTER = 1000
"""The outage starts once this many outcomes have arrived."""
POLICY = RetryPolicy(max_retries=10, initial_delay=0.005, max_delay=0.05)
BREAKER = CircuitBreaker(failure_threshold=10, cooldown=0.1, max_cooldown=0.4, give_up_after=60.0)


@pytest.mark.parametrize("kind", ["unavailable", "ambiguous_502"])
async def test_outage_mid_run_recovers_without_loss(
    osvi_emulator: OsviEmulator, reliability: Recorder, kind: str
) -> None:
    """A 2 s outage after 1,000 outcomes: the run waits it out; all succeed, in order, once."""
    osvi_emulator.fault_plan = FaultPlan(seed=11, latency=0.25, latency_seconds=(0.001, 0.01))
    sessions = [osvi_emulator.create_session() for _ in range(SESSIONS)]
    items = spread_items(sessions, ITEMS, f"outage-{kind}", 11)
    outage_started: list[float] = []

    def maybe_start_outage(outcomes: int) -> None:
        if outcomes == OUTAGE_AFTER:
            osvi_emulator.fault_plan.outage(OUTAGE_SECONDS, kind=kind)
            outage_started.append(time.monotonic())

    fds_before = open_fds()
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, timeout=2.0, retry=POLICY
    ) as client:
        result = await run_bulk(
            client,
            items,
            on_outcome=maybe_start_outage,
            concurrency=CONCURRENCY,
            circuit_breaker=BREAKER,
        )
    finished = time.monotonic()
    leaks = await settle(fds_before, lambda: osvi_emulator.stats.open_connections)
    report = audit(
        osvi_emulator, items, result.received, result.leftovers, result.summary, complete=True
    )
    stats = osvi_emulator.stats
    summary = result.summary
    failures, delayed = injected(osvi_emulator)
    budget_bound = ITEMS * 2 + summary.succeeded
    # Spent on the outage, with the breaker: what was in flight or in backoff when it began
    # (at most 2 per worker), the threshold, and one probe per cool-down.
    probes = math.ceil(OUTAGE_SECONDS / BREAKER.cooldown) + 1
    outage_bound = 2 * CONCURRENCY + BREAKER.failure_threshold + probes
    reliability.add(
        section=2,
        scenario=f"outage {OUTAGE_SECONDS:g} s mid-run ({kind})",
        items=ITEMS,
        faults=failures,
        latency=delayed,
        requests=stats.requests_total,
        **(report.figures() | leaks.figures()),
        bound=(
            f"requests {stats.requests_total} <= 2N + S = {budget_bound}; "
            f"failed requests {failures} <= 2 x concurrency + threshold + probes = {outage_bound}"
        ),
        note=(
            f"{summary.succeeded} ok, {summary.failed} failed; {summary.retries} retries; "
            f"{summary.possible_duplicates} flagged possible_duplicate; "
            f"run took {summary.elapsed:.1f} s"
        ),
    )

    assert not report.problems, "\n".join(report.problems)
    assert leaks.clean, leaks
    assert outage_started, "the outage never started"
    assert finished - outage_started[0] >= OUTAGE_SECONDS * 0.9  # waited it out, did not fail
    assert summary.succeeded == ITEMS
    assert stats.peak_in_flight <= CONCURRENCY
    assert ITEMS <= stats.requests_total <= ITEMS + summary.retries
    assert stats.requests_total <= budget_bound
    assert 0 < failures <= outage_bound


@pytest.mark.parametrize(
    "breaker",
    [
        CircuitBreaker(failure_threshold=10, cooldown=0.05, max_cooldown=0.1, give_up_after=0.5),
        None,
    ],
    ids=["breaker", "budget-only"],
)
async def test_total_outage_costs_at_most_two_requests_per_item(
    osvi_emulator: OsviEmulator, reliability: Recorder, breaker: CircuitBreaker | None
) -> None:
    """Every request fails, holding off: max_retries=10, yet at most 2 requests per item."""
    items_count = 400
    osvi_emulator.fault_plan.outage(3600.0, kind="unavailable")
    sessions = [osvi_emulator.create_session() for _ in range(20)]
    items = spread_items(sessions, items_count, "total-outage", 5)
    policy = RetryPolicy(max_retries=10, initial_delay=0.001, max_delay=0.005)
    fds_before = open_fds()
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, timeout=2.0, retry=policy
    ) as client:
        result = await run_bulk(
            client, items, concurrency=16, circuit_breaker=breaker, hold_on_failure=False
        )
    leaks = await settle(fds_before, lambda: osvi_emulator.stats.open_connections)
    report = audit(
        osvi_emulator, items, result.received, result.leftovers, result.summary, complete=True
    )
    stats = osvi_emulator.stats
    failures, delayed = injected(osvi_emulator)
    reliability.add(
        section=2,
        scenario="total outage, max_retries=10"
        + (" (breaker + budget)" if breaker else " (budget only)"),
        items=items_count,
        faults=failures,
        latency=delayed,
        requests=stats.requests_total,
        **(report.figures() | leaks.figures()),
        bound=f"requests {stats.requests_total} <= 2N = {2 * items_count}",
        note=f"every item failed: {report.error_summary()}",
    )

    assert not report.problems, "\n".join(report.problems)
    assert leaks.clean, leaks
    assert result.summary.succeeded == 0
    assert all(
        isinstance(outcome.error, ServerError | CircuitOpenError) for outcome in result.received
    ), report.error_summary()
    assert report.applied_total == 0
    assert stats.requests_total <= 2 * items_count
    assert stats.peak_in_flight <= 16


async def test_total_outage_holds_each_session_after_its_first_failure(
    osvi_emulator: OsviEmulator, reliability: Recorder
) -> None:
    """Every request fails: one failed item per session, the rest held, never sent or applied."""
    items_count = 400
    osvi_emulator.fault_plan.outage(3600.0, kind="unavailable")
    sessions = [osvi_emulator.create_session() for _ in range(20)]
    items = spread_items(sessions, items_count, "held-outage", 5)
    policy = RetryPolicy(max_retries=10, initial_delay=0.001, max_delay=0.005)
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, timeout=2.0, retry=policy
    ) as client:
        result = await run_bulk(client, items, concurrency=16, circuit_breaker=None)
    report = audit(
        osvi_emulator, items, result.received, result.leftovers, result.summary, complete=True
    )
    stats = osvi_emulator.stats
    summary = result.summary
    first_of_session = {
        session: min(index for index, item in enumerate(items) if item.session_id == session)
        for session in sessions
    }
    reliability.add(
        section=2,
        scenario="total outage, holding on (the default)",
        items=items_count,
        faults=injected(osvi_emulator)[0],
        requests=stats.requests_total,
        **report.figures(),
        bound=f"requests {stats.requests_total} <= 2 x sessions = {2 * len(sessions)}",
        note=f"{summary.failed} failed, {summary.held} held: {report.error_summary()}",
    )

    assert not report.problems, "\n".join(report.problems)
    assert report.applied_total == 0
    assert summary.failed == len(sessions)
    assert summary.held == items_count - len(sessions)
    for outcome in result.received:
        assert outcome.request is not None
        first = first_of_session[outcome.request.session_id]
        if outcome.index == first:
            assert isinstance(outcome.error, ServerError)
        else:
            assert isinstance(outcome.error, ItemHeldError)
            assert outcome.error.waiting_for == first
            assert outcome.attempts == 0
            assert not outcome.error.may_have_been_applied
    # Only the first item of each session was ever sent: a first attempt and one budgeted retry.
    assert stats.requests_total <= 2 * len(sessions)
