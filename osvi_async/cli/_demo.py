"""`osvi-async demo`: a bulk run against the embedded emulator, verified from its own log.

It shows the SDK doing its main job under realistic trouble (engine 502s, 503s from the edge,
latency) and then proves, from what the server recorded, that every entry that was reported
as accepted landed exactly once and in order, and that none reported as failed landed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Final, Literal

import attrs
from rich.console import Console
from rich.table import Table

from osvi_async import InjectOutcome, OsviClient, RetryPolicy
from osvi_async._loop import event_loop_name
from osvi_async._transport import HttpBackend
from osvi_async.cli._bulk_io import Record
from osvi_async.cli._bulk_run import BulkCounts, run_bulk
from osvi_async.cli._progress import BulkProgress
from osvi_async.models import InjectRequest
from osvi_async.testing import CapacityModel, FaultKind, FaultPlan, OsviEmulator

DEMO_SERVICE_TIME_SECONDS: Final = 0.005
"""Service time of the demo's capacity model: 5 ms (+/-50%), so N slots serve ~200*N items/s."""


@attrs.frozen
class DemoSettings:
    """What the demo runs; the defaults finish in a few seconds on two cores."""

    sessions: int = 300
    entries: int = 6000
    concurrency: int | Literal["auto"] = 64
    engine_error_rate: float = 0.05
    unavailable_rate: float = 0.01
    seed: int = 42
    http_backend: HttpBackend = "aiohttp"
    capacity: int | None = None
    """Requests the emulator serves at once (a ``CapacityModel``); no limit when None."""


def demo_capacity(settings: DemoSettings) -> CapacityModel | None:
    """The demo's capacity model: N slots, a queue as deep, 429 with Retry-After beyond."""
    if settings.capacity is None:
        return None
    return CapacityModel(
        limit=settings.capacity,
        service_time=DEMO_SERVICE_TIME_SECONDS,
        jitter=0.5,
        queue_limit=settings.capacity,
        seed=settings.seed,
    )


async def run_demo(settings: DemoSettings, console: Console) -> bool:
    """Run the demo; True when the emulator's log matches what the SDK reported."""
    plan = FaultPlan(
        seed=settings.seed,
        engine_error=settings.engine_error_rate,
        unavailable=settings.unavailable_rate,
        latency=1.0,
        latency_seconds=(0.0, 0.004),
    )
    capacity = demo_capacity(settings)
    async with OsviEmulator(fault_plan=plan, capacity=capacity) as emulator:
        session_ids = [
            emulator.create_session(customer_id=f"demo-customer-{n}")
            for n in range(settings.sessions)
        ]
        records = [
            Record(
                index=i,
                line=i + 1,
                request=InjectRequest(
                    session_id=session_ids[i % settings.sessions],
                    context=f"Demo entry {i}: voice call summary #{i // settings.sessions}",
                ),
            )
            for i in range(settings.entries)
        ]
        retry = RetryPolicy(max_retries=6, initial_delay=0.05, max_delay=1.0)
        # Made before the banner: a backend that cannot be used is the only line printed.
        client = OsviClient(
            emulator.api_token,
            base_url=emulator.base_url,
            retry=retry,
            http_backend=settings.http_backend,
        )
        console.print(
            f"Emulator at {emulator.base_url}: {settings.sessions} sessions, "
            f"{settings.entries} entries, {settings.engine_error_rate:.0%} engine 502s, "
            f"{settings.unavailable_rate:.0%} 503s, 0-4 ms latency"
            + (
                ""
                if capacity is None
                else f", capacity {capacity.limit} at once (queue {capacity.queue_limit})"
            )
        )
        started = time.monotonic()
        async with client:
            accepted: set[int] = set()

            def remember(record: Record, outcome: InjectOutcome) -> None:
                if outcome.ok:
                    accepted.add(record.index)

            counts = BulkCounts(to_send=settings.entries)
            with BulkProgress(
                console, counts, settings.entries, description="injecting"
            ) as progress:
                await run_bulk(
                    client,
                    records,
                    report=None,
                    resume=None,
                    counts=counts,
                    progress=progress,
                    concurrency=settings.concurrency,
                    rate_limit=None,
                    on_outcome=remember,
                )
        elapsed = time.monotonic() - started
        problems = verify(emulator, records, accepted)
        stats = emulator.stats
        capacity_stats = emulator.capacity_stats()
    loop = event_loop_name()
    table = Table(title="osvi-async demo", show_header=False)
    table.add_row("items", str(settings.entries))
    table.add_row("succeeded / failed", f"{counts.ok} / {counts.failed}")
    table.add_row("retries", str(counts.retries))
    if counts.concurrency_limit is not None:
        table.add_row("concurrency", f"auto, limit {counts.concurrency_limit} at the end")
    table.add_row("requests the server received", str(stats.requests_total))
    failures = sum(n for kind, n in stats.faults_injected.items() if kind is not FaultKind.LATENCY)
    table.add_row("failures injected", str(failures))
    table.add_row("elapsed", f"{elapsed:.2f} s")
    table.add_row("throughput", f"{settings.entries / elapsed:,.0f} items/s")
    table.add_row("peak requests in flight", str(stats.peak_in_flight))
    if capacity is not None:
        table.add_row(
            "capacity: served / refused",
            f"{capacity_stats.served} / {capacity_stats.refused} "
            f"(limit {capacity.limit}, peak {capacity_stats.peak_in_service} in service)",
        )
    # What the throughput was measured on.
    table.add_row("event loop / HTTP backend", f"{loop} / {settings.http_backend}")
    verdict = "[green]OK[/]: every accepted entry landed exactly once, in order"
    table.add_row("verification", verdict if not problems else f"[red]FAILED[/]: {problems[0]}")
    console.print(table)
    for problem in problems[1:10]:
        console.print(f"  [red]-[/] {problem}")
    return not problems


def verify(emulator: OsviEmulator, records: list[Record], accepted: set[int]) -> list[str]:
    """Compare each session's applied log with the accepted entries, in input order.

    Returns the problems found (an empty list means the run was exact): an accepted entry
    that is missing, a failed one that landed, an entry that landed twice or out of order.
    """
    expected: dict[str, list[str]] = defaultdict(list)
    requests = [(r.index, r.request) for r in records if isinstance(r.request, InjectRequest)]
    for index, request in requests:
        if index in accepted:
            expected[request.session_id].append(request.context)
    sessions = {request.session_id for _, request in requests}
    problems: list[str] = []
    for session_id in sorted(sessions):
        applied = list(emulator.applied(session_id))
        wanted = expected.get(session_id, [])
        if applied != wanted:
            problems.append(
                f"session {session_id}: the server applied {len(applied)} entries, "
                f"{len(wanted)} were reported accepted, or their order differs"
            )
    return problems
