"""Scenario 3: cancellation at random moments, property-based (hypothesis, derandomized).

A call is cancelled while connecting, while its answer's body is arriving, during a backoff,
or after a random number of event-loop steps; a bulk run is cancelled, closed or left after a
random delay or number of outcomes. After each: every item is accounted for exactly once,
nothing reported "not sent" was applied, nothing is sent after the cancellation, and no task,
connection or file descriptor is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import aiohttp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from osvi_async import InjectContextResult, InjectOutcome, OsviClient, RetryPolicy
from osvi_async._transport import HttpBackend
from osvi_async.testing import FaultPlan, OsviEmulator
from tests.chaos._harness import (
    audit,
    injected,
    mixed_plan,
    open_fds,
    settle,
    spread_items,
    wait_until,
)
from tests.chaos._report import Recorder
from tests.chaos._servers import (
    SESSION_ID,
    TOKEN,
    RawServer,
    full_backlog,
    never_answer,
    stall_in_body,
)

# Few, fast, reproducible examples: the same ones on every run, nothing stored on disk.
CI = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FAST = RetryPolicy(max_retries=4, initial_delay=0.002, max_delay=0.01)


async def outcome_of(task: asyncio.Task[InjectContextResult]) -> str:
    """How a cancelled call ended: "cancelled", "ok", "ok, flagged" or an error's name."""
    try:
        result = await task
    except asyncio.CancelledError:
        return "cancelled"
    except Exception as exc:
        return type(exc).__name__
    return "ok, flagged" if result.possible_duplicate else "ok"


@settings(CI, max_examples=12)
@given(
    steps=st.integers(min_value=0, max_value=60),
    first=st.sampled_from([None, "latency", "engine_error", "ambiguous_drop", "ambiguous_502"]),
)
async def test_single_call_cancelled_after_random_loop_steps(
    reliability: Recorder, http_backend: HttpBackend, steps: int, first: str | None
) -> None:
    """Cancelled after 0-60 loop steps: applied at most as often as sent; nothing after (on
    reqwest, at most the one request pyreqwest already had, see docs/transports.md); no leak."""
    async with OsviEmulator(fault_plan=FaultPlan(latency_seconds=0.01)) as emulator:
        session = emulator.create_session()
        emulator.fault_plan.script(session, [first])
        fds_before = open_fds()
        async with OsviClient(
            emulator.api_token, base_url=emulator.base_url, timeout=2.0, retry=FAST
        ) as client:
            task = asyncio.create_task(client.inject_context(session, "the entry"))
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            ended = await outcome_of(task)
            sent = emulator.requests_for(session)
        await wait_until(lambda: emulator.stats.in_flight == 0)
        await asyncio.sleep(0.02)
        leaks = await settle(fds_before, lambda: emulator.stats.open_connections)
        applied = emulator.applied(session).count("the entry")
        event(f"{ended} after {sent} request(s)")
        reliability.add(
            section=3,
            scenario="cancel one call after 0-60 loop steps",
            items=1,
            faults=injected(emulator)[0],
            requests=emulator.requests_for(session),
            lost=int(ended.startswith("ok") and applied == 0),
            duplicated_flagged=int(applied > 1 and ended == "ok, flagged"),
            duplicated_unflagged=int(applied > 1 and ended != "ok, flagged"),
            **leaks.figures(),
            bound="no request after the cancel; applied <= requests sent; ok => applied",
            tally={
                "cancelled": int(ended == "cancelled"),
                "finished first": int(ended.startswith("ok")),
                "cancelled before sending": int(ended == "cancelled" and sent == 0),
            },
        )

        assert ended in {"cancelled", "ok", "ok, flagged"}
        # pyreqwest 0.15 sends a request it was handed even if its caller was cancelled
        # (it cannot abort it); aiohttp's cancel stops it. Never a retry after the cancel.
        late = 1 if http_backend == "reqwest" else 0
        assert sent <= emulator.requests_for(session) <= sent + late
        assert applied <= emulator.requests_for(session)
        if ended.startswith("ok"):
            assert applied >= 1
        if ended == "ok":
            assert applied == 1  # an unflagged result is not a duplicate
        assert leaks.clean, leaks


@settings(CI, max_examples=6)
@given(delay=st.floats(min_value=0.0, max_value=0.04))
async def test_cancel_while_connecting(reliability: Recorder, delay: float) -> None:
    """Cancelled while the TCP connect hangs (full backlog): no socket or task left behind."""
    with full_backlog() as port:
        fds_before = open_fds()
        async with OsviClient(TOKEN, base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
            task = asyncio.create_task(client.inject_context(SESSION_ID, "never connected"))
            await asyncio.sleep(delay)
            task.cancel()
            started = time.monotonic()
            ended = await outcome_of(task)
            took = time.monotonic() - started
        leaks = await settle(fds_before, lambda: 0)
    reliability.add(
        section=3,
        scenario="cancel while connecting",
        items=1,
        **leaks.figures(),
        bound="the cancelled call ends within 0.5 s",
        tally={"cancelled": int(ended == "cancelled")},
    )

    assert ended == "cancelled"
    assert took < 0.5
    assert leaks.clean, leaks


@settings(CI, max_examples=6)
@given(delay=st.floats(min_value=0.0, max_value=0.03))
async def test_cancel_while_reading_the_body(reliability: Recorder, delay: float) -> None:
    """Cancelled after the head arrived, with the body stalled: the connection is closed."""
    async with RawServer(stall_in_body) as server:
        fds_before = open_fds()
        async with OsviClient(TOKEN, base_url=server.base_url, timeout=5.0) as client:
            task = asyncio.create_task(client.inject_context(SESSION_ID, "half answered"))
            await server.headers_sent.wait()
            await asyncio.sleep(delay)
            task.cancel()
            ended = await outcome_of(task)
        leaks = await settle(fds_before, lambda: server.open_connections)
        reliability.add(
            section=3,
            scenario="cancel while the body is arriving",
            items=1,
            requests=server.requests,
            **leaks.figures(),
            bound="the server sees the connection closed",
            tally={"cancelled": int(ended == "cancelled")},
        )

        assert ended == "cancelled"
        assert server.requests == 1
        assert leaks.clean, leaks


@settings(CI, max_examples=6)
@given(
    failed_attempts=st.integers(min_value=1, max_value=3),
    into_backoff=st.floats(min_value=0.0, max_value=0.08),
)
async def test_cancel_during_backoff(
    reliability: Recorder, failed_attempts: int, into_backoff: float
) -> None:
    """Cancelled 0-80 ms into backoff n (0.1 x 2^(n-1) s): ends at once, nothing more is sent."""
    async with OsviEmulator() as emulator:
        session = emulator.create_session()
        emulator.fault_plan.script(session, ["engine_error"] * 4)
        # Waits of exactly 0.1, 0.2, 0.4 s: attempt n + 1 goes out that long after attempt n.
        policy = RetryPolicy(max_retries=4, initial_delay=0.1, max_delay=1.0, random=lambda: 1.0)
        fds_before = open_fds()
        async with OsviClient(
            emulator.api_token, base_url=emulator.base_url, timeout=2.0, retry=policy
        ) as client:
            task = asyncio.create_task(client.inject_context(session, "backing off"))
            assert await wait_until(lambda: emulator.requests_for(session) == failed_attempts)
            await asyncio.sleep(into_backoff)
            task.cancel()
            cancelled_at = time.monotonic()
            ended = await outcome_of(task)
            took = time.monotonic() - cancelled_at
            sent = emulator.requests_for(session)
            # Past the moment the next attempt would have gone out.
            await asyncio.sleep(0.1 * 2 ** (failed_attempts - 1) - into_backoff + 0.05)
        leaks = await settle(fds_before, lambda: emulator.stats.open_connections)
        reliability.add(
            section=3,
            scenario="cancel during a backoff",
            items=1,
            faults=injected(emulator)[0],
            requests=emulator.requests_for(session),
            **leaks.figures(),
            bound="ends within 0.25 s of the cancel; no request after it",
            tally={f"cancelled in backoff {failed_attempts}": 1},
        )

        assert ended == "cancelled"
        assert took < 0.25  # the backoff sleep is cancelled, not waited out
        assert sent == failed_attempts
        assert emulator.requests_for(session) == sent
        assert emulator.applied(session) == ()
        assert leaks.clean, leaks


HOW = [
    "cancel-after-delay",
    "cancel-after-outcomes",
    "break-after-outcomes",
    "aclose-from-task",
    "drain-after-delay",
]


@settings(CI, max_examples=30)
@given(
    how=st.sampled_from(HOW),
    delay=st.floats(min_value=0.0, max_value=0.25),
    count=st.integers(min_value=0, max_value=400),
    fault_rate=st.sampled_from([0.0, 0.3]),
    seed=st.integers(min_value=0, max_value=2**16),
)
async def test_bulk_run_stopped_at_a_random_moment(
    reliability: Recorder, how: str, delay: float, count: int, fault_rate: float, seed: int
) -> None:
    """A bulk run stopped mid-way: received + leftovers cover the pulled items exactly once."""
    plan, _ = mixed_plan(
        fault_rate, seed, latency=0.5, latency_seconds=(0.001, 0.005), retry_after_seconds=0
    )
    concurrency = 16
    async with OsviEmulator(fault_plan=plan) as emulator:
        sessions = [emulator.create_session() for _ in range(20)]
        items = spread_items(sessions, 1500, f"cancel{seed}", seed)
        received: list[InjectOutcome] = []
        enough = asyncio.Event()
        fds_before = open_fds()
        async with OsviClient(
            emulator.api_token, base_url=emulator.base_url, timeout=0.3, retry=FAST
        ) as client:
            run = client.inject_many(items, concurrency=concurrency)

            async def consume() -> None:
                async for outcome in run:
                    received.append(outcome)
                    if len(received) >= count:
                        enough.set()
                        if how == "break-after-outcomes":
                            break
                enough.set()

            task = asyncio.create_task(consume())
            if how in {"cancel-after-delay", "aclose-from-task", "drain-after-delay"}:
                await asyncio.wait([task], timeout=delay)
            else:
                await enough.wait()
            if how.startswith("cancel"):
                task.cancel()
            elif how == "aclose-from-task":
                await run.aclose()
            elif how == "drain-after-delay":
                run.drain(grace=0.05)  # shorter than a `hang`: some end interrupted
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await run.aclose()  # what `async with` does; the consumer may not have used it
        await wait_until(lambda: emulator.stats.in_flight == 0)
        leaks = await settle(fds_before, lambda: emulator.stats.open_connections)
        summary = run.summary
        report = audit(emulator, items, received, run.leftovers, summary, complete=False)
        failures, delayed = injected(emulator)
        event(f"{how}: {'stopped early' if run.leftovers else 'ran to the end'}")
        reliability.add(
            section=3,
            scenario="stop a bulk run at a random moment",
            items=summary.items,
            faults=failures,
            latency=delayed,
            requests=emulator.stats.requests_total,
            **(report.figures() | leaks.figures()),
            bound=f"interrupted <= concurrency = {concurrency}; peak in flight <= {concurrency}",
            tally={
                f"runs stopped by {how}": 1,
                "handed over": len(received),
                "not sent": summary.not_sent,
                "not sent yet applied": report.kind_counts["not-sent-applied"],
                "interrupted in flight": summary.interrupted,
            },
        )

        # Accounting, order, nothing lost, every duplicate flagged, nothing applied that was
        # reported not applied: stopping at a random moment keeps every promise.
        problems = report.problems
        assert not problems, "\n".join(problems)
        assert leaks.clean, leaks
        assert emulator.stats.peak_in_flight <= concurrency
        assert summary.interrupted <= concurrency
        assert summary.items <= len(items)


@pytest.mark.aiohttp_only  # borrows an aiohttp session
@settings(CI, max_examples=12)
@given(offset=st.floats(min_value=-0.01, max_value=0.01), busy=st.sampled_from([0.0, 0.02]))
async def test_bulk_aclose_as_the_timeout_fires(
    reliability: Recorder, caplog: pytest.LogCaptureFixture, offset: float, busy: float
) -> None:
    """aclose() as 0.2 s timeouts fire, loop busy or not: no request after it, no task left."""
    started: list[float] = []  # when the client started each request (aiohttp's trace)

    async def on_request_start(*_: object) -> None:
        started.append(time.monotonic())

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    async with RawServer(never_answer) as server:
        fds_before = open_fds()
        loop = asyncio.get_running_loop()
        items = [(str(uuid.UUID(int=n + 1)), f"never answered {n}") for n in range(4)]
        async with (
            aiohttp.ClientSession(trace_configs=[trace]) as session,
            OsviClient(
                TOKEN,
                base_url=server.base_url,
                timeout=0.2,
                retry=RetryPolicy(initial_delay=0.001, max_delay=0.001),
                session=session,
            ) as client,
        ):
            run = client.inject_many(items, concurrency=4, circuit_breaker=None)
            received: list[InjectOutcome] = []

            async def consume() -> None:
                received.extend([outcome async for outcome in run])

            task = asyncio.create_task(consume())
            await wait_until(lambda: len(started) == 4)
            close_at = started[0] + 0.2 + offset
            if busy:
                # Blocks the loop across the moment the timeouts are due, so that they and
                # the close land in the same loop iteration.
                loop.call_at(loop.time() + close_at - busy - time.monotonic(), time.sleep, busy)
            await asyncio.sleep(close_at - time.monotonic())
            await run.aclose()
            closed_at = time.monotonic()
            await task
            await asyncio.sleep(0.1)  # a retry (1 ms backoff) would have started by now
        after_close = sum(1 for moment in started if moment > closed_at)
        leaks = await settle(fds_before, lambda: server.open_connections)
        summary = run.summary
        reliability.add(
            section=3,
            scenario="bulk aclose() as attempt timeouts fire",
            items=len(items),
            requests=len(started),
            **leaks.figures(),
            bound="no request after aclose() returned; no task left; no worker error",
            tally={"requests after aclose": after_close},
        )

        assert after_close == 0
        assert server.requests <= len(started)
        assert not [record for record in caplog.records if record.levelname == "ERROR"]
        outcomes = [*received, *run.leftovers]
        assert sorted(outcome.index for outcome in outcomes) == list(range(summary.items))
        assert not any(
            outcome.error is not None and "Unexpected" in outcome.error.message
            for outcome in outcomes
        )
        assert summary.items == (
            summary.succeeded
            + summary.failed
            + summary.held
            + summary.not_sent
            + summary.interrupted
        )
        assert leaks.clean, leaks
