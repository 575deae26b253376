"""The values the API answers with, as frozen attrs classes.

They are built in one place, `osvi_async._decode`, from the JSON the API sends; sequences are
tuples so that a result can be shared, hashed and kept without defensive copies.
"""

from __future__ import annotations

import attrs

from osvi_async.errors import OsviError

__all__ = ["BulkSummary", "InjectContextResult", "InjectOutcome", "InjectRequest"]


@attrs.frozen(slots=True)
class InjectContextResult:
    """What `OsviClient.inject_context` returns once the API has accepted the entry.

    Attributes:
        session_id: The chat session the entry was appended to.
        context: The session's context bucket after the append, oldest first. The API keeps
            only the 5 most recent entries, so an older entry may have dropped out of it.
        attempts: How many HTTP attempts the call took (1 when the first one succeeded).
        possible_duplicate: True when the entry may have been applied more than once: an
            earlier attempt (or, for a resend, an earlier call or run) may have applied it,
            and nothing rules a second copy out. Always True after an attempt that may still
            apply later (timed out or lost its connection after sending, a 504, a proxy's
            5xx page) and on a resend; after attempts that all settled (a JSON 502 relaying
            the engine's failure), True unless the bucket is not full and holds the entry
            exactly once. A hint, not a proof: it errs towards True. False on every clean
            result.
    """

    session_id: str
    context: tuple[str, ...]
    attempts: int = 1
    possible_duplicate: bool = False


@attrs.frozen(slots=True)
class InjectRequest:
    """One entry for `OsviClient.inject_many`: append `context` to session `session_id`.

    A plain `(session_id, context)` tuple is accepted wherever a request is.

    Attributes:
        session_id: The chat session UUID.
        context: The text to append.
        may_have_been_applied: Set when this is a resend of an entry whose earlier send may
            have been applied (an earlier run was stopped or killed while it was in flight, or
            it failed with `error.may_have_been_applied`). The send is then treated like a
            retry after an ambiguous attempt that may still apply: its result is always
            flagged `possible_duplicate`, and a failure says `may_have_been_applied`.
    """

    session_id: str
    context: str
    may_have_been_applied: bool = False


@attrs.frozen(slots=True)
class InjectOutcome:
    """How one item of a bulk run ended. Every item given to `inject_many` gets exactly one.

    Attributes:
        index: The item's position in the input, from 0.
        request: The item as an `InjectRequest`, or None if the input held something that is
            not a request or a `(session_id, context)` pair (`error` says what).
        ok: True when the entry was accepted.
        result: The API's answer when `ok`, else None.
        error: Why the item failed when not `ok`, else None: the call's error, a
            `ClientValidationError` for an invalid item (never sent), an `ItemHeldError` for
            an item held back because an earlier item of its session failed (never sent), or,
            in `BulkRun.leftovers` only, a `RunStoppedError`.
    """

    index: int
    request: InjectRequest | None
    ok: bool
    result: InjectContextResult | None = None
    error: OsviError | None = None

    @property
    def attempts(self) -> int:
        """HTTP attempts made for this item (0 if it was never sent)."""
        if self.result is not None:
            return self.result.attempts
        return self.error.attempts if self.error is not None else 0


@attrs.frozen(kw_only=True)
class BulkSummary:
    """Counts for a bulk run, so far or at its end (`BulkRun.summary`).

    Every item pulled from the input is counted exactly once:
    `items == succeeded + failed + held + not_sent + interrupted`.

    Attributes:
        items: Items pulled from the input so far.
        succeeded: Items the API accepted.
        failed: Items that ended with an error (including invalid ones), not counting held
            or stopped items.
        invalid: Of the failed, those refused before sending (bad session id or context).
        retries: Extra HTTP attempts made, across all items.
        retries_refused: Retries the policy wanted but the run's retry budget refused.
        possible_duplicates: Of the succeeded, those flagged `possible_duplicate`.
        not_sent: Items the run was stopped (closed, cancelled or drained) before it could
            apply them: queued, or waiting for the circuit or a backoff after attempts that
            certainly did not apply them. `RunStoppedError(request_sent=False)`.
        interrupted: Items stopped with an attempt on the wire, or after one that may have
            applied them. `RunStoppedError(request_sent=True)`.
        elapsed: Seconds since the run started (until it stopped).
        held: Items not sent because an earlier item of their session failed in a way a
            later attempt could fix (`ItemHeldError`); certainly not applied by this run.
    """

    items: int
    succeeded: int
    failed: int
    invalid: int
    retries: int
    retries_refused: int
    possible_duplicates: int
    not_sent: int
    interrupted: int
    elapsed: float
    held: int = 0

    @property
    def throughput(self) -> float:
        """Finished items (succeeded + failed) per second."""
        done = self.succeeded + self.failed
        return done / self.elapsed if self.elapsed > 0 else 0.0
