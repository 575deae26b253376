"""Retry decisions: what a failure means, whether to try again, and how long to wait.

Plain functions of the policy, the endpoint's `Safety` class and the error, tested on their
own; `Backoff` holds tenacity's wait and stop primitives for one failed call. The attempt
loop that uses them is `_call.call`; this is the only module that imports tenacity.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import re
from typing import Final

import tenacity

from osvi_async._config import RetryPolicy
from osvi_async._decode import escape_controls
from osvi_async.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    EngineError,
    EngineRejectedError,
    OsviError,
    ResponseDecodeError,
    TLSHandshakeError,
)

logger: Final = logging.getLogger("osvi_async")

# How the API says that nothing reached the engine ("Python engine unreachable"); not just any
# "unreachable", which an engine's own failure message may contain.
_ENGINE_UNREACHABLE: Final = re.compile(r"\bengine unreachable\b", re.IGNORECASE)
# How the API says the engine itself answered, with a failure ("Python engine returned 500 for
# POST ..."): the attempt is over. Any other code (an engine time-out, say) may still apply.
_ENGINE_ANSWERED: Final = re.compile(r"\bengine returned [1-5]\d\d\b", re.IGNORECASE)


def may_have_been_applied(error: OsviError) -> bool:
    """Whether the failed attempt may have appended the entry even so ("maybe applied").

    Certainly not applied: nothing was sent (`request_sent` False), any 4xx, a 503 (the edge
    had nothing to forward to), an engine refusal, or a 502 saying the engine was unreachable.
    Maybe applied: the request was sent and no answer came back (dropped, timed out), a 502
    in which the engine answered with a failure or a proxy gave up on it, 504 and other 5xx,
    and a success whose body could not be read.
    """
    if isinstance(error, APIConnectionError):
        return error.request_sent
    if isinstance(error, EngineRejectedError):
        return False
    if isinstance(error, EngineError):
        return error.code is None or _ENGINE_UNREACHABLE.search(error.code) is None
    if isinstance(error, APIStatusError):
        return error.status >= 500 and error.status != 503
    return isinstance(error, ResponseDecodeError)


def may_still_apply(error: OsviError) -> bool:
    """Whether a failed attempt may apply the entry *later*: sent, and not settled.

    An attempt is settled once the API itself answered for it: whatever it did is done. One
    that got no final answer from the API may still be running on the server, and apply its
    entry after a retry's answer was read, so that bucket cannot rule a duplicate out.

    May still apply: sent with no answer (`APIConnectionError` with `request_sent`, timeouts
    included), a 504 (a gateway gave up waiting; the request may still be on its way), any
    other 5xx that does not say the engine answered (a proxy's page, an engine time-out, an
    unknown code), and a success whose body could not be read (we cannot tell who sent it).
    Settled: everything that was not sent or certainly not applied (any 4xx, a 503, "engine
    unreachable"), and a 502 saying the engine itself answered ("Python engine returned 500
    ..."): whatever it did is done.
    """
    if isinstance(error, APIConnectionError):
        return error.request_sent
    if isinstance(error, APIStatusError):
        if not may_have_been_applied(error):
            return False
        return error.code is None or _ENGINE_ANSWERED.search(error.code) is None
    return isinstance(error, ResponseDecodeError)


class Safety(enum.Enum):
    """What repeating an endpoint's request can do, which decides what is retried.

    No OSVI endpoint takes an idempotency key, so the class is a property of the endpoint
    (and, for support, of the command), declared next to it in `_endpoints`.
    """

    READ = "read"
    """Changes nothing (an active-session lookup): every transient failure is retried."""
    IDEMPOTENT = "idempotent"
    """Sets a state a repeat sets again (takeover, end, close): retried like a read."""
    AT_LEAST_ONCE = "at least once"
    """Appends (inject_context, whisper): retried after a maybe-applied failure, because a
    lost entry is worse than a repeated one; such a result is flagged `possible_duplicate`."""
    AT_MOST_ONCE = "at most once"
    """Creates or says something (create a session, send a message, tell): a maybe-applied
    failure is raised, not retried, because a repeat could close the session just opened,
    or show the customer a message twice."""

    @property
    def changes_state(self) -> bool:
        """Whether a request of this class can apply anything at all."""
        return self is not Safety.READ

    def retries_ambiguous(self, policy: RetryPolicy) -> bool:
        """Whether a failure that may have applied the request is retried, under `policy`:
        `policy.retry_ambiguous` when set, else this class's default."""
        if policy.retry_ambiguous is not None:
            return policy.retry_ambiguous
        return self is not Safety.AT_MOST_ONCE


def is_retryable(
    policy: RetryPolicy, error: BaseException, safety: Safety = Safety.AT_LEAST_ONCE
) -> bool:
    """Whether `error` may go away on another attempt of a `safety` request, under `policy`.

    Cancellation and anything that is not an `OsviError` are never retried, nor an engine
    refusal or a failed TLS handshake (the same request would fail the same way), nor a
    failure after which the request may have been applied, unless the safety class (or
    `policy.retry_ambiguous`) allows it.
    """
    if not isinstance(error, OsviError) or isinstance(
        error, EngineRejectedError | TLSHandshakeError
    ):
        return False
    if (
        safety.changes_state
        and not safety.retries_ambiguous(policy)
        and may_have_been_applied(error)
    ):
        return False
    if isinstance(error, APIStatusError):
        return error.status in policy.retry_statuses
    if isinstance(error, APITimeoutError):
        return policy.retry_timeouts
    return isinstance(error, APIConnectionError) and policy.retry_connection_errors


def indicates_outage(error: OsviError) -> bool:
    """Whether a failure says the API is unwell, independently of any retry policy.

    Used by the circuit breaker: a 5xx, 429 or 408, a timeout or a failed connection says so;
    a 4xx, an engine refusal or an unreadable success says the API answered, and a failed TLS
    handshake says the client is pointed at the wrong port or does not trust the certificate.
    """
    if isinstance(error, EngineRejectedError | TLSHandshakeError):
        return False
    if isinstance(error, APIStatusError):
        return error.status >= 500 or error.status in (408, 429)
    return isinstance(error, APIConnectionError)


def backoff_delay(
    policy: RetryPolicy,
    failed_attempt: int,
    error: OsviError,
    rand: float,
    *,
    ceiling: float | None = None,
) -> float:
    """Seconds to wait after attempt number `failed_attempt` failed with `error`.

    `rand` is a number in [0, 1) that scales the full-jitter wait, whose `ceiling` is
    `min(max_delay, initial_delay * 2**(failed_attempt-1))` unless given (by `Backoff`). A
    server's `Retry-After`, if the policy honours it, replaces the computed wait and is cut
    to `max_retry_after`.
    """
    if (
        policy.respect_retry_after
        and isinstance(error, APIStatusError)
        and error.retry_after is not None
    ):
        return min(error.retry_after, policy.max_retry_after)
    if ceiling is None:
        ceiling = min(policy.max_delay, policy.initial_delay * 2.0 ** (failed_attempt - 1))
    return rand * ceiling


class Backoff:
    """When to try again after a failed attempt, and whether to stop: tenacity's primitives.

    Built only once a call has failed, so a call that succeeds at once pays nothing for it.
    The wait is tenacity's exponential ceiling, `min(max_delay, initial_delay * 2**(n-1))`,
    scaled by a random number in [0, 1) (full jitter); a `Retry-After` the policy honours
    replaces it (see `backoff_delay`). The stop is tenacity's `stop_after_attempt` (the retry
    count) or `stop_before_delay` (the policy's deadline, counting the coming sleep).
    """

    __slots__ = ("_policy", "_rand", "_state", "_stop", "_wait")

    def __init__(self, policy: RetryPolicy, started: float) -> None:
        self._policy = policy
        self._rand = policy.random or random.random
        self._wait = tenacity.wait_exponential(
            multiplier=policy.initial_delay, max=policy.max_delay
        )
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(policy.max_retries + 1)
        if policy.deadline is not None:
            stop = stop | tenacity.stop_before_delay(policy.deadline)
        self._stop = stop
        # Only the fields the primitives read are kept up to date: attempt_number, the start
        # and the outcome time (seconds_since_start), and upcoming_sleep.
        self._state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        self._state.start_time = started

    def delay(self, failed_attempt: int, error: OsviError, now: float) -> float | None:
        """Seconds to sleep before the next attempt, or None when the policy says stop."""
        state = self._state
        state.attempt_number = failed_attempt
        state.outcome_timestamp = now
        state.upcoming_sleep = backoff_delay(
            self._policy, failed_attempt, error, self._rand(), ceiling=self._wait(state)
        )
        if self._stop(state):
            return None
        return state.upcoming_sleep


def remaining_budget(policy: RetryPolicy, timeout: float, started: float, now: float) -> float:
    """The timeout for an attempt starting at `now`: the call's timeout, cut to the deadline.

    Zero or less means the deadline has passed and the attempt should not be made.
    """
    if policy.deadline is None:
        return timeout
    return min(timeout, policy.deadline - (now - started))


def raise_if_cancelling() -> None:
    """Raise `asyncio.CancelledError` if the current task is being cancelled.

    For the places where a cancel may have been swallowed or turned into another error (a
    timeout, a custom sleep): a call whose task is being cancelled never sends again.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def failure_summary(error: OsviError) -> str:
    """The failure, for the retry log line: server text comes in redacted (see `_decode`), and
    control characters are escaped here so that no server text can forge a log line."""
    if isinstance(error, APIStatusError):
        return escape_controls(f"HTTP {error.status} {error.code or ''}".rstrip())
    return escape_controls(f"{type(error).__name__}: {error.message}")
