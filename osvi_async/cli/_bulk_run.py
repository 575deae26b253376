"""Drive one `inject_many` run from input records, journaling it in the report as it goes.

Every record ends in exactly one of the counters of `BulkCounts`, and (with a report) every
record sent has an intent line before its first byte goes out and an outcome line once it
ends, so a later `--resume` knows what is done, what is final and what may have been applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Literal

import attrs

from osvi_async import (
    APIStatusError,
    BulkRun,
    CustomerInjectRequest,
    InjectOutcome,
    InjectRequest,
    ItemHeldError,
    OsviClient,
    RunStoppedError,
    refused_for_good,
)
from osvi_async._lanes import held_message
from osvi_async.cli._bulk_io import Record, Request
from osvi_async.cli._progress import BulkProgress
from osvi_async.cli._report import ReportState, ReportWriter
from osvi_async.cli._signals import GracefulStop, exit_code, signal_name

EXIT_OK = 0
EXIT_FAILED = 1


@attrs.define
class BulkCounts:
    """What a bulk command did; the one place its totals live (progress and summary read it).

    Attributes:
        ok: Items accepted in this run.
        failed: Items that failed in this run (malformed records included).
        held: Items not sent because an earlier item of their session failed.
        stopped: Items a stop ended: not sent, or cut off in flight.
        maybe_applied: Of the failed, held and stopped, those that may have been applied.
        possible_duplicates: Of the ok, those flagged `possible_duplicate`.
        skipped: Records the report already marks done (not sent again).
        final: Records the report marks failed for good (not sent again).
        to_send: Records this run meant to send, when the input's size is known.
        retries: Extra HTTP attempts across the run.
        unread: True when the run stopped before reading all its input.
        read: Records this run read from the input to send (malformed ones included).
        stopped_unsent: Of the stopped, those certainly not sent.
        failed_for_good: Of the failed, those a resend would fail again (refused for good,
            malformed): `--resume` does not resend them.
        concurrency_limit: With `--concurrency auto`, the adaptive limit as of the last
            outcome; None otherwise.
    """

    ok: int = 0
    failed: int = 0
    held: int = 0
    stopped: int = 0
    maybe_applied: int = 0
    possible_duplicates: int = 0
    skipped: int = 0
    final: int = 0
    to_send: int | None = None
    retries: int = 0
    unread: bool = False
    read: int = 0
    stopped_unsent: int = 0
    failed_for_good: int = 0
    concurrency_limit: int | None = None

    @property
    def finished(self) -> int:
        """Items of this run that have an outcome."""
        return self.ok + self.failed + self.held + self.stopped

    @property
    def not_sent(self) -> int:
        """Items of this run certainly not sent: stopped before sending, or never read."""
        never_read = 0
        if self.unread and self.to_send is not None:
            never_read = max(0, self.to_send - self.read)
        return self.stopped_unsent + never_read

    def count(self, outcome: InjectOutcome) -> None:
        """Count one item's outcome."""
        error = outcome.error
        self.retries += max(0, outcome.attempts - 1)
        if outcome.ok:
            self.ok += 1
            self.possible_duplicates += bool(outcome.result and outcome.result.possible_duplicate)
            return
        if isinstance(error, ItemHeldError):
            self.held += 1
        elif isinstance(error, RunStoppedError):
            self.stopped += 1
            self.stopped_unsent += not error.request_sent
        else:
            self.failed += 1
        if error is not None and error.may_have_been_applied:
            self.maybe_applied += 1

    @property
    def _limit_note(self) -> str:
        """The summary's word on the adaptive limit, for `--concurrency auto` runs."""
        if self.concurrency_limit is None:
            return ""
        return f", concurrency limit {self.concurrency_limit} at the end"

    @property
    def left(self) -> bool:
        """Whether anything failed, was held or stopped, is final, or was never read."""
        return bool(self.failed or self.held or self.stopped or self.final or self.unread)

    def exit_code(self, stop: GracefulStop | None) -> int:
        """130/143 after a stop signal (even if nothing was left to send); 1 if anything is left.

        A run that received a stop signal always says so: whoever sent it (a shell, systemd,
        CI) asked for a stop and reads the status as the answer, whatever was left.
        """
        if stop is not None and stop.signum is not None:
            return exit_code(stop.signum)
        return EXIT_FAILED if self.left else EXIT_OK

    def summary(self, stop: GracefulStop | None, *, stopped_by: str | None = None) -> str:
        """The closing line; `stopped_by` names what else stopped the run at once, if anything."""
        if stop is not None and stop.signum is not None:
            how = "at once" if stop.signals > 1 else "after in-flight items finished"
            stopped_by = f"{signal_name(stop.signum)} ({how})"
        if stopped_by is not None:
            line = (
                f"stopped by {stopped_by}: {self.ok} ok, "
                f"{self.failed} failed, {self.held} held, {self.not_sent} not sent, "
                f"{self.maybe_applied} may have been applied"
            )
            line += self._limit_note
            if self.left:
                line += "; run again with --resume"
            return line
        line = (
            f"{self.ok} ok, {self.failed} failed, {self.skipped} skipped (already done), "
            f"{self.held} held, {self.final} final (not resent), {self.retries} retries"
        )
        if self.maybe_applied:
            line += f", {self.maybe_applied} may have been applied"
        if self.possible_duplicates:
            line += f", {self.possible_duplicates} possible duplicates"
        line += self._limit_note
        if self.held or self.failed > self.failed_for_good:
            line += "; run again with --resume to retry what failed"
        return line


class _Journal:
    """Turns records into requests and outcomes into report lines, mapping the two indexes.

    `inject_many` numbers only the requests it is given; records already done, final or
    malformed are not given to it, so each request's position is mapped back to its record.
    """

    def __init__(
        self,
        *,
        report: ReportWriter | None,
        resume: ReportState | None,
        counts: BulkCounts,
        progress: BulkProgress,
        on_outcome: Callable[[Record, InjectOutcome], None] | None,
    ) -> None:
        self.report = report
        self.resume = resume
        self.counts = counts
        self.progress = progress
        self.on_outcome = on_outcome
        self.exhausted = False
        self.run: BulkRun | None = None  # set for --concurrency auto: the limit to show
        self._by_position: dict[int, Record] = {}  # open items only
        self._failed_at: dict[int, int] = {}  # position -> record index, of failed items

    def requests(self, records: Iterable[Record]) -> Iterator[Request]:
        """The requests to send, lazily; skips and reports records that are not sent."""
        position = 0
        resume, counts = self.resume, self.counts
        for record in records:
            if resume is not None and resume.is_done(record.index):
                counts.skipped += 1
                continue
            if resume is not None and resume.is_final(record.index):
                counts.final += 1
                continue
            counts.read += 1
            if record.request is None:
                if self.report is not None:
                    self.report.write_unreadable(
                        index=record.index, line=record.line, problem=record.problem
                    )
                counts.failed += 1
                counts.failed_for_good += 1
                self.progress.refresh_soon()
                continue
            request = record.request
            if resume is not None and resume.may_have_been_applied(record.index):
                # Either kind of request: a customer row is resent by customer, flagged.
                request = attrs.evolve(request, may_have_been_applied=True)
            self._by_position[position] = record
            position += 1
            yield request
        self.exhausted = True

    def on_send(self, position: int) -> None:
        """inject_many's hook before an item's first byte goes out: the intent line."""
        if self.report is not None:
            self.report.write_intent(self._by_position[position].index)

    def finish(self, outcome: InjectOutcome) -> None:
        """Report and count one outcome."""
        record = self._by_position.pop(outcome.index)
        error = outcome.error
        waiting_for: int | None = None
        if isinstance(error, ItemHeldError):
            waiting = self._by_position.get(error.waiting_for)
            waiting_for = (
                waiting.index if waiting is not None else self._failed_at.get(error.waiting_for)
            )
            held = outcome.request  # a held item was read: it has its request
            if waiting_for is not None and waiting_for != error.waiting_for and held is not None:
                # The run counts positions, the report records (a resume skips done ones):
                # the message must name the record that waiting_for names.
                error.args = (held_message(held, waiting_for),)
        elif not outcome.ok:
            self._failed_at[outcome.index] = record.index
        for_good = error is not None and refused_for_good(error)
        limit = None if self.run is None else self.run.concurrency_limit
        if limit is not None:
            self.counts.concurrency_limit = limit
        if self.report is not None:
            request, customer = record.request, None
            session_id = request.session_id if isinstance(request, InjectRequest) else None
            if isinstance(request, CustomerInjectRequest):
                customer = (request.customer_id, request.agent_uuid)
                session_id = _sent_to(outcome)
            self.report.write_outcome(
                index=record.index,
                line=record.line,
                session_id=session_id,
                outcome=outcome,
                refused_for_good=for_good,
                waiting_for=waiting_for,
                customer=customer,
                concurrency_limit=limit,
            )
        if self.on_outcome is not None:
            self.on_outcome(record, outcome)
        self.counts.count(outcome)
        if for_good and not isinstance(error, ItemHeldError | RunStoppedError):
            self.counts.failed_for_good += 1
        self.progress.refresh_soon()


async def run_bulk(
    client: OsviClient,
    records: Iterable[Record],
    *,
    report: ReportWriter | None,
    resume: ReportState | None,
    counts: BulkCounts,
    progress: BulkProgress,
    concurrency: int | Literal["auto"],
    rate_limit: float | None,
    max_concurrency: int | None = None,
    stop: GracefulStop | None = None,
    on_outcome: Callable[[Record, InjectOutcome], None] | None = None,
) -> BulkCounts:
    """Send every record not already done or final; each one sent gets one outcome line.

    Unreadable records are reported (and counted as failed) as they are read. A record whose
    earlier send may have applied it is resent with `may_have_been_applied`, so its outcome
    carries `possible_duplicate` (or, failed, `may_have_been_applied`). If the run is
    stopped, items that did not finish are reported as stopped (saying whether they may have
    been applied), and records never read have no line: `--resume` sends them.
    """
    journal = _Journal(
        report=report, resume=resume, counts=counts, progress=progress, on_outcome=on_outcome
    )
    run = client.inject_many(
        journal.requests(records),
        concurrency=concurrency,
        max_concurrency=max_concurrency,
        rate_limit=rate_limit,
        on_send=journal.on_send if report is not None else None,
    )
    if concurrency == "auto":
        journal.run = run  # its outcome lines and the progress show the limit as it moves
    if stop is not None:
        stop.attach(run)
    if report is not None:
        report.on_failure = lambda: run.drain(0.0)  # a report that cannot grow: stop at once
    try:
        async with run:
            async for outcome in run:
                journal.finish(outcome)
    finally:
        for outcome in run.leftovers:
            journal.finish(outcome)
        counts.unread = not journal.exhausted
    return counts


def _sent_to(outcome: InjectOutcome) -> str | None:
    """The session a customer row's entry went to, when known: the answer's, or for a failure
    the API answered (a status error), the session it was for. A connection failure does
    not say which session the cached lookup picked: None."""
    if outcome.result is not None:
        return outcome.result.session_id
    if isinstance(outcome.error, APIStatusError):
        return outcome.error.session_id
    return None
