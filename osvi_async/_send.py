"""One API call from first attempt to final answer: send, decode, and retry when allowed.

The first attempt runs here directly; the retry loop (`_retry.retry_after_failure`) is entered
only after a retryable failure. An optional `AttemptGate` lets a bulk run pause attempts (a
circuit breaker, a rate limit) and ration retries (a retry budget) across many calls.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import attrs

from osvi_async._config import RetryPolicy
from osvi_async._decode import decode_inject_context, status_error
from osvi_async._retry import (
    indicates_outage,
    is_retryable,
    logger,
    may_have_been_applied,
    raise_if_cancelling,
    remaining_budget,
    retry_after_failure,
)
from osvi_async._transport import Transport
from osvi_async.errors import APITimeoutError, OsviError
from osvi_async.models import InjectContextResult

BUCKET_SIZE: Final = 5
"""Entries a session keeps (FIFO); appending a sixth drops the oldest."""


class AttemptGate(Protocol):
    """Flow control shared by many calls; see `osvi_async._flow.FlowControl`."""

    def ready(self, number: int) -> bool:
        """Whether attempt `number` of a call may be sent at once (no await needed)."""

    async def wait(self, number: int) -> None:
        """Wait until attempt `number` may be sent, or raise to give up unsent; called only
        when `ready` said no."""

    def after_attempt(self, error: OsviError | None, *, outage: bool) -> None:
        """Learn how an attempt ended: `error` None for a success; `outage` when the failure
        says the API is unwell (whatever the retry policy makes of it)."""

    def attempt_abandoned(self) -> None:
        """An attempt that was let through ended without an answer (cancelled, or unsent)."""

    def allow_retry(self) -> bool:
        """Whether the shared retry budget allows one more retry; takes it if so."""


async def send_inject_context(
    transport: Transport,
    *,
    url: str,
    body: bytes,
    session_id: str,
    context: str,
    timeout: float,
    policy: RetryPolicy,
    gate: AttemptGate | None = None,
    already_maybe_applied: bool = False,
) -> InjectContextResult:
    """POST one inject_context request, with retries, and return the decoded result.

    `already_maybe_applied` says an earlier send of the same entry (an earlier call or run)
    may have applied it: the call then starts as if after an ambiguous attempt.
    """
    started = time.monotonic()
    # The common case (no gate, no deadline) sends the first attempt flat: no closure, one
    # coroutine frame less. The attempt function is built only when it is needed.
    attempt = None
    if gate is not None or policy.deadline is not None:
        attempt = _attempts(transport, url, body, session_id, timeout, policy, started, gate)
    try:
        if attempt is None:
            result = await _attempt_once(
                transport, url, body, session_id=session_id, timeout=timeout, number=1
            )
        else:
            result = await attempt(1)
    except OsviError as first_error:
        if policy.max_retries == 0 or not is_retryable(policy, first_error):
            first_error.may_have_been_applied = already_maybe_applied or may_have_been_applied(
                first_error
            )
            raise
        failure = first_error
    else:
        if context not in result.context:
            _warn_entry_missing(result)
        if already_maybe_applied:
            return _flag_possible_duplicate(result, context)
        return result
    # A cancel that the transport turned into another error must not lead to a resend.
    raise_if_cancelling()
    if attempt is None:
        attempt = _attempts(transport, url, body, session_id, timeout, policy, started, None)
    ambiguous = already_maybe_applied

    def note(error: OsviError) -> None:
        nonlocal ambiguous
        ambiguous = ambiguous or may_have_been_applied(error)

    try:
        result = await retry_after_failure(
            policy,
            attempt,
            failure,
            started=started,
            operation=f"inject_context for session {session_id}",
            allow_retry=gate.allow_retry if gate is not None else None,
            on_failure=note,
        )
    except OsviError as last_error:
        # The last error describes the last attempt; an earlier one may have applied it.
        last_error.may_have_been_applied = ambiguous or may_have_been_applied(last_error)
        raise
    if context not in result.context:
        _warn_entry_missing(result)
    if ambiguous:
        return _flag_possible_duplicate(result, context)
    return result


def _warn_entry_missing(result: InjectContextResult) -> None:
    """A 200 whose bucket lacks the entry is accepted: the API says it appended it, and with
    other writers on the session it may already have scrolled out. It is logged, and flagged
    (by `_flag_possible_duplicate`) when an earlier attempt may have applied it too."""
    logger.warning(
        "inject_context for session %s: the API answered 200 but the returned bucket does "
        "not hold the entry (other writers may have pushed it out); accepted as applied",
        result.session_id,
    )


def _flag_possible_duplicate(result: InjectContextResult, context: str) -> InjectContextResult:
    """After an attempt that may have applied the entry, flag the result unless the bucket
    rules a duplicate out.

    Only a bucket that is not full (so nothing has scrolled out of it yet) and holds the entry
    exactly once proves that it was applied once. Anything else (the entry twice anywhere,
    however many other writers came in between; a full bucket, from which an earlier copy may
    have dropped; a bucket without the entry) cannot rule a duplicate out.

    What it cannot see: a copy pushed out of a full bucket is flagged only as "cannot rule out"
    (false positives are the price), and it cannot tell our entry from the same text sent by
    another writer, which also only errs towards flagging.
    """
    bucket = result.context
    if len(bucket) < BUCKET_SIZE and bucket.count(context) == 1:
        return result
    logger.warning(
        "inject_context for session %s: an earlier attempt may have been applied and the "
        "bucket cannot rule out that the entry was appended twice (possible_duplicate)",
        result.session_id,
    )
    return attrs.evolve(result, possible_duplicate=True)


def _attempts(  # noqa: PLR0917 - private; mirrors send_inject_context's arguments
    transport: Transport,
    url: str,
    body: bytes,
    session_id: str,
    timeout: float,
    policy: RetryPolicy,
    started: float,
    gate: AttemptGate | None,
) -> Callable[[int], Awaitable[InjectContextResult]]:
    """The function that makes attempt number n, under the deadline and the gate."""

    async def attempt(number: int) -> InjectContextResult:
        if gate is not None and not gate.ready(number):
            try:
                await gate.wait(number)
            except BaseException:
                # Cancelled (or refused) while waiting, perhaps after being made the probe:
                # give the circuit back rather than leave it half-open for good.
                gate.attempt_abandoned()
                raise
        budget = remaining_budget(policy, timeout, started, time.monotonic())
        if budget <= 0:
            # Waiting for the gate used up the deadline: sending now could only time out.
            if gate is not None:
                gate.attempt_abandoned()  # a probe that is not sent must not hold the circuit
            raise APITimeoutError(
                f"The retry deadline of {policy.deadline:g} s passed before attempt "
                f"{number} could be sent",
                request_sent=False,
                attempts=number - 1,
            )
        try:
            result = await _attempt_once(
                transport, url, body, session_id=session_id, timeout=budget, number=number
            )
        except OsviError as exc:
            if gate is not None:
                gate.after_attempt(exc, outage=indicates_outage(exc))
            raise
        except BaseException:
            if gate is not None:
                gate.attempt_abandoned()
            raise
        if gate is not None:
            gate.after_attempt(None, outage=False)
        return result

    return attempt


async def _attempt_once(
    transport: Transport, url: str, body: bytes, *, session_id: str, timeout: float, number: int
) -> InjectContextResult:
    try:
        response = await transport.post(url, body, timeout=timeout)
        if 200 <= response.status < 300:
            return decode_inject_context(
                response.status,
                response.body,
                session_id=session_id,
                attempts=number,
                scrubber=transport.scrubber,
            )
    except OsviError as exc:
        exc.attempts = number
        raise
    raise status_error(
        response.status,
        response.body,
        session_id=session_id,
        retry_after=response.retry_after,
        attempts=number,
        scrubber=transport.scrubber,
    )
