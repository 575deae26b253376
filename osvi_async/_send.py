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
    may_still_apply,
    raise_if_cancelling,
    remaining_budget,
    retry_after_failure,
)
from osvi_async._transport import Transport
from osvi_async.errors import APITimeoutError, ClientClosedError, OsviError
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
        # After a resend (an earlier call or run may have applied it), nothing says whether
        # that send settled.
        return _accepted(
            result, context, ambiguous=already_maybe_applied, settled=not already_maybe_applied
        )
    # A cancel that the transport turned into another error must not lead to a resend.
    raise_if_cancelling()
    if attempt is None:
        attempt = _attempts(transport, url, body, session_id, timeout, policy, started, None)
    ambiguous = already_maybe_applied
    # A resend after an earlier call or run: we cannot know whether that one settled.
    unsettled = already_maybe_applied
    previous: OsviError | None = None

    def note(error: OsviError) -> None:
        nonlocal ambiguous, unsettled, previous
        ambiguous = ambiguous or may_have_been_applied(error)
        unsettled = unsettled or may_still_apply(error)
        previous = error

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
    except ClientClosedError as closed:
        # Closed during the backoff: the last real failure says what happened (a request cut
        # off by close() is "sent, no answer"), not the retry that could not start.
        error = previous or closed
        error.may_have_been_applied = ambiguous or may_have_been_applied(error)
        raise error from None
    except OsviError as last_error:
        # The last error describes the last attempt; an earlier one may have applied it.
        last_error.may_have_been_applied = ambiguous or may_have_been_applied(last_error)
        raise
    return _accepted(result, context, ambiguous=ambiguous, settled=not unsettled)


def _accepted(
    result: InjectContextResult, context: str, *, ambiguous: bool, settled: bool
) -> InjectContextResult:
    """The result to return for a success: the entry-missing warning, and the duplicate flag
    when an earlier attempt (or send) may have applied the entry."""
    if context not in result.context:
        _warn_entry_missing(result)
    if ambiguous:
        return _flag_possible_duplicate(result, context, settled=settled)
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


def _flag_possible_duplicate(
    result: InjectContextResult, context: str, *, settled: bool
) -> InjectContextResult:
    """After an attempt that may have applied the entry, flag the result unless the bucket
    rules a duplicate out.

    The bucket can rule one out only if every maybe-applied attempt had *settled* (the API
    itself answered for it, see `may_still_apply`) before it was read: an attempt that timed
    out or lost its connection may still apply its entry after the retry's answer was sent,
    and a resend (`already_maybe_applied`) follows a call or run we know nothing more about.
    So with `settled` False the result is always flagged.

    With `settled` True, only a bucket that is not full (nothing has scrolled out of it yet)
    and holds the entry exactly once proves that it was applied once. Anything else (the entry
    twice anywhere, however many other writers came in between; a full bucket, from which an
    earlier copy may have dropped; a bucket without the entry) cannot rule a duplicate out.

    What it cannot see: it never proves a duplicate, only fails to rule one out, so it errs
    towards flagging (false positives are the price): a timed-out attempt that the server
    never applied, a copy pushed out of a full bucket, or the same text sent by another
    writer all lead to a flag.
    """
    if settled:
        bucket = result.context
        if len(bucket) < BUCKET_SIZE and bucket.count(context) == 1:
            return result
    logger.warning(
        "inject_context for session %s: an earlier attempt may have been applied and the "
        "bucket cannot rule out that the entry was appended twice%s (possible_duplicate)",
        result.session_id,
        "" if settled else " (that attempt may apply after the bucket was read)",
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
