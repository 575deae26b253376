"""Drive one `inject_many` run from input records, writing the report as outcomes arrive."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import attrs

from osvi_async import InjectOutcome, InjectRequest, OsviClient
from osvi_async.cli._bulk_io import Record, ReportWriter, is_done
from osvi_async.cli._progress import BulkProgress


@attrs.define
class BulkCounts:
    """What a bulk command did, for its exit code and closing line."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    retries: int = 0
    not_sent: int = 0
    interrupted: int = 0


async def run_bulk(
    client: OsviClient,
    records: Iterable[Record],
    *,
    report: ReportWriter | None,
    done: bytearray,
    progress: BulkProgress,
    concurrency: int,
    rate_limit: float | None,
    on_outcome: Callable[[Record, InjectOutcome], None] | None = None,
) -> BulkCounts:
    """Send every record not already done; each one ends up in the report exactly once.

    Unreadable records are reported (and counted as failed) as they are read. If the run is
    interrupted, items that were pulled but did not finish are reported as failed too, so
    `--resume` sends them again; items never pulled have no line and are sent by `--resume`.
    """
    counts = BulkCounts()
    by_position: dict[int, Record] = {}  # inject_many's index -> record; only open items

    def requests() -> Iterator[InjectRequest]:
        position = 0
        for record in records:
            if is_done(done, record.index):
                counts.skipped += 1
                continue
            if record.request is None:
                if report is not None:
                    report.write_unreadable(record)
                counts.failed += 1
                progress.record(ok=False)
                continue
            by_position[position] = record
            position += 1
            yield record.request

    def finish(outcome: InjectOutcome) -> None:
        record = by_position.pop(outcome.index)
        if report is not None:
            report.write_outcome(record, outcome)
        if on_outcome is not None:
            on_outcome(record, outcome)
        retries = max(0, outcome.attempts - 1)
        counts.retries += retries
        if outcome.ok:
            counts.ok += 1
        else:
            counts.failed += 1
        progress.record(ok=outcome.ok, retries=retries)

    run = client.inject_many(requests(), concurrency=concurrency, rate_limit=rate_limit)
    try:
        async with run:
            async for outcome in run:
                finish(outcome)
    finally:
        for outcome in run.leftovers:
            finish(outcome)
        summary = run.summary
        counts.not_sent = summary.not_sent
        counts.interrupted = summary.interrupted
    return counts
