"""What every chaos scenario checks, from the emulator's own log, and how it counts leaks.

Each item's context is unique (`"<tag> item <index>"`), so the emulator's `applied(session)`
log says exactly how many times each item was applied and in which order. `audit` holds
those facts against what the client reported:

- every item pulled has exactly one outcome, handed over or in `run.leftovers`;
- an item reported ok was applied at least once (else it is *lost*);
- an item applied more than once was warned of: ok with `possible_duplicate=True`, or failed
  with an error that says it may have been applied (else *unflagged*);
- an item reported failed with an error that certainly did not apply (docs/retries.md,
  docs/errors.md) was not applied (else *misreported*); a held item (`ItemHeldError`) in
  particular was never applied;
- each session's entries were applied in input order (holding keeps it so across failures);
- the summary's counters agree with the outcomes.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from osvi_async import (
    BulkSummary,
    InjectOutcome,
    InjectRequest,
    ItemHeldError,
    OsviClient,
    OsviError,
    RunStoppedError,
)
from osvi_async.testing import FaultKind, FaultPlan, OsviEmulator
from tests.chaos._report import Figures

FAULT_KINDS: Final = (
    "engine_error",
    "engine_rejected",
    "proxy_html_502",
    "unavailable",
    "gateway_timeout",
    "rate_limited",
    "ambiguous_drop",
    "ambiguous_502",
    "hang",
)
"""Every failure class of the FaultPlan (latency is drawn on its own)."""


def fault_mix(total: float, seed: int) -> dict[str, float]:
    """Rates for every fault class, summing to `total`, with seeded random weights.

    Each weight is drawn from [0.5, 1.5), so every class is present and none dominates.
    """
    rng = random.Random(seed)
    weights = {kind: 0.5 + rng.random() for kind in FAULT_KINDS}
    scale = total / sum(weights.values())
    return {kind: weight * scale for kind, weight in weights.items()}


def mixed_plan(total: float, seed: int, **options: Any) -> tuple[FaultPlan, dict[str, float]]:
    """A seeded `FaultPlan` with `fault_mix(total, seed)` and `options`; also the rates."""
    rates = fault_mix(total, seed)
    settings: dict[str, Any] = {**rates, **options}
    return FaultPlan(seed=seed, **settings), rates


def spread_items(sessions: Sequence[str], count: int, tag: str, seed: int) -> list[InjectRequest]:
    """`count` items, each for a random session (seeded), each with a unique context."""
    rng = random.Random(seed)
    return [InjectRequest(rng.choice(sessions), f"{tag} item {index}") for index in range(count)]


def certainly_not_applied(error: OsviError) -> bool:
    """Whether the SDK says an item that failed with `error` was certainly not applied.

    `OsviError.may_have_been_applied` covers every attempt of the call (docs/errors.md); the
    classes alone describe only the last attempt.
    """
    return not error.may_have_been_applied


def describe(outcome: InjectOutcome) -> str:
    """One outcome, short, for failure messages."""
    if outcome.ok and outcome.result is not None:
        return (
            f"ok after {outcome.attempts} attempt(s), flagged={outcome.result.possible_duplicate}"
        )
    error = outcome.error
    message = error.message if error is not None else ""
    return f"{type(error).__name__} after {outcome.attempts} attempt(s): {message[:90]}"


PROBLEM_KINDS: Final = (
    "accounting",  # an item without exactly one outcome, or a summary that disagrees
    "order",  # a session's entries applied out of input order, or to the wrong session
    "lost",  # reported ok, never applied
    "unflagged",  # reported ok, applied more than once, possible_duplicate False
    "failed-duplicate",  # reported failed "certainly not applied", yet applied more than once
    "not-sent-applied",  # RunStoppedError(request_sent=False), yet applied
    "held-applied",  # ItemHeldError (held to keep order), yet applied
    "final-error-misreport",  # failed with a certainly-not-applied error, yet applied
)


@dataclass
class Audit:
    """What the server's log says about a run, against what the client reported."""

    items: int
    pulled: int = 0
    succeeded: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    lost: list[int] = field(default_factory=list)
    duplicated_flagged: list[int] = field(default_factory=list)
    duplicated_unflagged: list[int] = field(default_factory=list)
    misreported: list[int] = field(default_factory=list)
    flagged_results: int = 0
    applied_total: int = 0
    sessions_out_of_order: int = 0
    kind_counts: dict[str, int] = field(default_factory=dict)
    findings: list[tuple[str, str]] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Every broken promise, one line each."""
        return [text for _, text in self.findings]

    def problems_except(self, *kinds: str) -> list[str]:
        """The problems not of these kinds (see `PROBLEM_KINDS`)."""
        return [text for kind, text in self.findings if kind not in kinds]

    def problem(self, kind: str, text: str) -> None:
        """Note a broken promise of one of `PROBLEM_KINDS`."""
        assert kind in PROBLEM_KINDS, kind
        self.findings.append((kind, text))

    def figures(self) -> Figures:
        """The counts a report row takes."""
        return {
            "lost": len(self.lost),
            "duplicated_flagged": len(self.duplicated_flagged),
            "duplicated_unflagged": len(self.duplicated_unflagged),
            "misreported": len(self.misreported),
        }

    def error_summary(self) -> str:
        """The failures by type, most frequent first, e.g. "12 EngineRejectedError"."""
        return ", ".join(f"{count} {name}" for name, count in self.errors.most_common()) or "none"


def audit(
    emulator: OsviEmulator,
    items: Sequence[InjectRequest],
    received: Sequence[InjectOutcome],
    leftovers: Sequence[InjectOutcome],
    summary: BulkSummary,
    *,
    complete: bool,
) -> Audit:
    """Check a bulk run's outcomes against the emulator's log; `complete`: ran to the end."""
    report = Audit(items=len(items), pulled=summary.items)
    outcomes = [*received, *leftovers]
    seen = Counter(outcome.index for outcome in outcomes)
    twice = sorted(index for index, count in seen.items() if count > 1)
    if twice:
        report.problem("accounting", f"indexes with more than one outcome: {twice[:10]}")
    if set(seen) != set(range(summary.items)):
        missing = sorted(set(range(summary.items)) - set(seen))
        extra = sorted(set(seen) - set(range(summary.items)))
        report.problem(
            "accounting", f"outcomes do not cover 0..{summary.items - 1}: missing {missing[:10]}"
        )
        if extra:
            report.problem("accounting", f"outcomes for items never pulled: {extra[:10]}")
    if complete and (summary.items != len(items) or leftovers):
        report.problem(
            "accounting",
            f"a complete run pulled {summary.items} of {len(items)} items "
            f"and left {len(leftovers)} leftovers",
        )

    index_of = {item.context: index for index, item in enumerate(items)}
    applied_count: Counter[int] = Counter()
    sessions = sorted({item.session_id for item in items})
    for session in sessions:
        log = emulator.applied(session)
        order: list[int] = []
        for entry in log:
            index = index_of.get(entry)
            if index is None:
                report.problem(
                    "order", f"session {session} holds an entry we never sent: {entry!r}"
                )
                continue
            if items[index].session_id != session:
                report.problem("order", f"item {index} was applied to the wrong session {session}")
            applied_count[index] += 1
            order.append(index)
        out_of_order = [
            (earlier, later) for earlier, later in itertools.pairwise(order) if later < earlier
        ]
        firsts = list(dict.fromkeys(order))  # each item's first application, in log order
        report.sessions_out_of_order += firsts != sorted(firsts)
        if out_of_order:
            report.problem(
                "order", f"session {session} applied out of input order: {out_of_order[:5]}"
            )
    report.applied_total = sum(applied_count.values())
    never_pulled = sorted(index for index in applied_count if index >= summary.items)
    if never_pulled:
        report.problem(
            "accounting", f"items applied but never pulled from the input: {never_pulled[:10]}"
        )

    by_index = {outcome.index: outcome for outcome in outcomes}
    kinds: dict[str, list[int]] = {kind: [] for kind in PROBLEM_KINDS}
    for index, outcome in sorted(by_index.items()):
        count = applied_count[index]
        if outcome.ok:
            report.succeeded += 1
            flagged = outcome.result is not None and outcome.result.possible_duplicate
            report.flagged_results += flagged
            if count == 0:
                kinds["lost"].append(index)
            elif count > 1 and flagged:
                report.duplicated_flagged.append(index)
            elif count > 1:
                kinds["unflagged"].append(index)
            continue
        report.failed += 1
        error = outcome.error
        report.errors[type(error).__name__] += 1
        if error is None:
            report.problem("accounting", f"item {index} failed without an error")
            continue
        # A failure that says "may have been applied" warns of repeats as well; one that
        # says "certainly not applied" hides them.
        if count > 1 and certainly_not_applied(error):
            kinds["failed-duplicate"].append(index)
        elif count > 1:
            report.duplicated_flagged.append(index)
        if count > 0 and isinstance(error, ItemHeldError):
            kinds["held-applied"].append(index)
        elif count > 0 and certainly_not_applied(error):
            stopped_unsent = isinstance(error, RunStoppedError)
            kinds["not-sent-applied" if stopped_unsent else "final-error-misreport"].append(index)
    report.kind_counts = {kind: len(indexes) for kind, indexes in kinds.items()}
    report.lost = kinds["lost"]
    report.duplicated_unflagged = kinds["unflagged"] + kinds["failed-duplicate"]
    report.misreported = (
        kinds["not-sent-applied"] + kinds["held-applied"] + kinds["final-error-misreport"]
    )
    labels = {
        "lost": "reported ok but never applied (lost)",
        "unflagged": "reported ok, applied more than once, not flagged possible_duplicate",
        "failed-duplicate": "failed as certainly not applied, yet applied more than once",
        "not-sent-applied": "reported RunStoppedError(request_sent=False), yet applied",
        "held-applied": "held (ItemHeldError), yet applied",
        "final-error-misreport": "failed with a certainly-not-applied error, yet applied",
    }
    for kind, label in labels.items():
        indexes = kinds[kind]
        if indexes:
            details = "; ".join(
                f"#{index} applied {applied_count[index]}x, {describe(by_index[index])}"
                for index in indexes[:5]
            )
            report.problem(kind, f"{len(indexes)} item(s) {label}: {details}")

    stopped = [o.error for o in leftovers if isinstance(o.error, RunStoppedError)]
    not_sent = sum(1 for error in stopped if not error.request_sent)
    counted = (
        summary.succeeded + summary.failed + summary.held + summary.not_sent + summary.interrupted
    )
    if counted != summary.items:
        report.problem(
            "accounting", f"summary counts {counted} outcomes for {summary.items} items: {summary}"
        )
    if summary.succeeded != report.succeeded:
        report.problem(
            "accounting", f"summary.succeeded={summary.succeeded}, outcomes say {report.succeeded}"
        )
    held = report.errors["ItemHeldError"]
    if summary.held != held:
        report.problem("accounting", f"summary.held={summary.held}, outcomes say {held}")
    if (summary.not_sent, summary.interrupted) != (not_sent, len(stopped) - not_sent):
        report.problem(
            "accounting", f"summary not_sent/interrupted disagree with the leftovers: {summary}"
        )
    flagged_results = report.flagged_results
    if summary.possible_duplicates != flagged_results:
        report.problem(
            "accounting",
            f"summary.possible_duplicates={summary.possible_duplicates}, not {flagged_results}",
        )
    return report


@dataclass
class BulkResult:
    """What one bulk run handed over, what it left, and its final summary."""

    received: list[InjectOutcome]
    leftovers: tuple[InjectOutcome, ...]
    summary: BulkSummary


async def run_bulk(
    client: OsviClient,
    items: Sequence[InjectRequest],
    *,
    on_outcome: Callable[[int], None] | None = None,
    **options: object,
) -> BulkResult:
    """Run `inject_many` to the end; `on_outcome(n)` is told the count after each outcome."""
    received: list[InjectOutcome] = []
    async with client.inject_many(items, **options) as run:  # type: ignore[arg-type]
        async for outcome in run:
            received.append(outcome)
            if on_outcome is not None:
                on_outcome(len(received))
    return BulkResult(received, run.leftovers, run.summary)


def open_fds() -> int:
    """File descriptors this process has open (Linux)."""
    return len(os.listdir("/proc/self/fd"))


def other_tasks() -> set[asyncio.Task[object]]:
    """Tasks alive besides the current one."""
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


@dataclass(frozen=True)
class Leaks:
    """What was still there once everything should have been released."""

    tasks: int
    connections: int
    fds: int

    @property
    def clean(self) -> bool:
        """Nothing leaked."""
        return self.tasks == self.connections == self.fds == 0

    def figures(self) -> Figures:
        """The counts a report row takes."""
        return {
            "leaked_tasks": self.tasks,
            "leaked_connections": self.connections,
            "leaked_fds": self.fds,
        }


async def settle(
    fds_before: int, open_connections: Callable[[], int], *, timeout: float = 5.0
) -> Leaks:
    """Wait (up to `timeout`) for tasks, server-side connections and fds to go, then count.

    A server sees a socket close a moment after the client closed it, and its handler tasks
    end a moment later still, so a leak is what remains after the wait.
    """
    deadline = time.monotonic() + timeout
    while True:
        leaks = Leaks(
            tasks=len(other_tasks()),
            connections=open_connections(),
            fds=max(0, open_fds() - fds_before),
        )
        if leaks.clean or time.monotonic() > deadline:
            return leaks
        await asyncio.sleep(0.005)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `condition` until it holds or `timeout` passes; return whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.002)
    return True


def injected(emulator: OsviEmulator) -> tuple[int, int]:
    """Failures the emulator injected, and answers it delayed (latency), so far."""
    faults = emulator.stats.faults_injected
    failures = sum(count for kind, count in faults.items() if kind is not FaultKind.LATENCY)
    return failures, faults[FaultKind.LATENCY]
