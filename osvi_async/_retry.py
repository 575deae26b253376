"""Retry decisions and the backoff loop; the only module that imports tenacity.

The decision "retry or not" (`is_retryable`) and the wait (`backoff_delay`) are plain functions
of the policy and the error, tested on their own. `retry_after_failure` feeds them to tenacity.

The first attempt of a call never comes here: the client makes it directly and calls
`retry_after_failure` only once a retryable error happened, so the success path pays nothing
for the retry machinery.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import tenacity

from osvi_async._config import RetryEvent, RetryPolicy
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

T = TypeVar("T")

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


def is_retryable(policy: RetryPolicy, error: BaseException) -> bool:
    """Whether `error` may go away on another attempt, under `policy`.

    Cancellation and anything that is not an `OsviError` are never retried, nor an engine
    refusal or a failed TLS handshake (the same request would fail the same way), nor, with
    `retry_ambiguous=False`, a failure after which the entry may have been applied.
    """
    if not isinstance(error, OsviError) or isinstance(
        error, EngineRejectedError | TLSHandshakeError
    ):
        return False
    if not policy.retry_ambiguous and may_have_been_applied(error):
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


def backoff_delay(policy: RetryPolicy, failed_attempt: int, error: OsviError, rand: float) -> float:
    """Seconds to wait after attempt number `failed_attempt` failed with `error`.

    `rand` is a number in [0, 1) that scales the full-jitter wait. A server's `Retry-After`, if
    the policy honours it, replaces the computed wait and is cut to `max_retry_after`.
    """
    if (
        policy.respect_retry_after
        and isinstance(error, APIStatusError)
        and error.retry_after is not None
    ):
        return min(error.retry_after, policy.max_retry_after)
    ceiling = min(policy.max_delay, policy.initial_delay * 2.0 ** (failed_attempt - 1))
    return rand * ceiling


async def retry_after_failure(
    policy: RetryPolicy,
    attempt: Callable[[int], Awaitable[T]],
    first_error: OsviError,
    *,
    started: float,
    operation: str,
    allow_retry: Callable[[], bool] | None = None,
    on_failure: Callable[[OsviError], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Keep calling `attempt(n)` for n = 2, 3, ... after the first attempt failed.

    Returns the first success. When the policy gives up, the last real error is raised (with
    its `attempts` set), never a tenacity type. `started` is the `clock()` reading at the
    start of the call, for the deadline. `allow_retry`, when given, is asked before each
    retry (after the policy said yes) and can refuse it: a bulk run's shared retry budget.
    `on_failure` is told of every failure that is followed by another attempt.

    A task being cancelled never starts another attempt: whatever the last attempt raised
    (a cancel can surface as a timeout) and whatever `policy.sleep` does, the loop raises
    `asyncio.CancelledError` before sending again.
    """
    rand = policy.random or random.random
    number = 1

    async def next_attempt() -> T:
        nonlocal number
        if number == 1:
            # Replays the first attempt's failure so that tenacity computes the first wait.
            number = 2
            raise first_error
        raise_if_cancelling()
        current, number = number, number + 1
        return await attempt(current)

    async def sleep(seconds: float) -> None:
        raise_if_cancelling()
        await policy.sleep(seconds)
        raise_if_cancelling()  # a custom sleep may have swallowed the cancel

    def wait(state: tenacity.RetryCallState) -> float:
        error = _failure(state)
        return backoff_delay(policy, state.attempt_number, error, rand())

    def stop(state: tenacity.RetryCallState) -> bool:
        if state.attempt_number > policy.max_retries:
            return True
        if (
            policy.deadline is not None
            and clock() - started + state.upcoming_sleep >= policy.deadline
        ):
            return True
        return allow_retry is not None and not allow_retry()

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = _failure(state)
        delay = state.upcoming_sleep
        logger.info(
            "%s: attempt %d failed (%s); retrying in %.3f s",
            operation,
            state.attempt_number,
            _cause(error),
            delay,
        )
        if on_failure is not None:
            on_failure(error)
        if policy.on_retry is not None:
            try:
                policy.on_retry(RetryEvent(attempt=state.attempt_number, delay=delay, error=error))
            except Exception:
                # A metrics hook that fails must not turn a typed failure (which says whether
                # the entry may have been applied) into a bare exception: log it, go on.
                logger.warning("%s: the on_retry hook raised; ignored", operation, exc_info=True)

    retrying = tenacity.AsyncRetrying(
        stop=stop,
        wait=wait,
        retry=tenacity.retry_if_exception(lambda exc: is_retryable(policy, exc)),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
    return await retrying(next_attempt)


def remaining_budget(policy: RetryPolicy, timeout: float, started: float, now: float) -> float:
    """The timeout for an attempt starting at `now`: the call's timeout, cut to the deadline.

    Zero or less means the deadline has passed and the attempt should not be made.
    """
    if policy.deadline is None:
        return timeout
    return min(timeout, policy.deadline - (now - started))


def _failure(state: tenacity.RetryCallState) -> OsviError:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    if not isinstance(error, OsviError):  # pragma: no cover - `retry` admits only OsviError
        raise RuntimeError("retry loop saw a non-osvi failure") from error
    return error


def raise_if_cancelling() -> None:
    """Raise `asyncio.CancelledError` if the current task is being cancelled.

    For the places where a cancel may have been swallowed or turned into another error (a
    timeout, a custom sleep): a call whose task is being cancelled never sends again.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _cause(error: OsviError) -> str:
    """The failure, for the retry log line: server text comes in redacted (see `_decode`), and
    control characters are escaped here so that no server text can forge a log line."""
    if isinstance(error, APIStatusError):
        return escape_controls(f"HTTP {error.status} {error.code or ''}".rstrip())
    return escape_controls(f"{type(error).__name__}: {error.message}")
