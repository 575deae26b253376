"""The retry decision and backoff maths, as plain functions."""

from __future__ import annotations

from typing import Any

import pytest

from osvi_async import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ClientValidationError,
    EngineError,
    EngineRejectedError,
    OsviError,
    RateLimitError,
    ResponseDecodeError,
    RetryPolicy,
    TLSHandshakeError,
)
from osvi_async._retry import (
    backoff_delay,
    indicates_outage,
    is_retryable,
    may_have_been_applied,
    may_still_apply,
    remaining_budget,
)


def status(error_class: type[APIStatusError], code: int, retry_after: float | None = None) -> Any:
    """An error of `error_class` for HTTP `code`."""
    return error_class("x", status=code, code=None, body="", retry_after=retry_after)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (status(EngineError, 502), True),
        (status(EngineRejectedError, 502), False),
        (status(APIStatusError, 408), True),
        (status(RateLimitError, 429), True),
        (status(APIStatusError, 503), True),
        (status(APIStatusError, 504), True),
        (status(APIStatusError, 500), False),
        (status(APIStatusError, 400), False),
        (status(APIStatusError, 401), False),
        (status(APIStatusError, 404), False),
        (status(APIStatusError, 409), False),
        (APIConnectionError("x", request_sent=False), True),
        (APIConnectionError("x", request_sent=True), True),
        (APITimeoutError("x", request_sent=True), True),
        (ResponseDecodeError("x", status=200, body=""), False),
        (ClientValidationError("x"), False),
        (OsviError("x"), False),
        (ValueError("x"), False),
    ],
)
def test_default_policy_decision(error: BaseException, expected: bool) -> None:
    """The default policy retries transient failures only."""
    assert is_retryable(RetryPolicy(), error) is expected


def test_switches_turn_off_connection_and_timeout_retries() -> None:
    """retry_connection_errors and retry_timeouts act independently."""
    no_conn = RetryPolicy(retry_connection_errors=False)
    assert not is_retryable(no_conn, APIConnectionError("x", request_sent=False))
    assert is_retryable(no_conn, APITimeoutError("x", request_sent=True))
    no_timeout = RetryPolicy(retry_timeouts=False)
    assert not is_retryable(no_timeout, APITimeoutError("x", request_sent=True))
    assert is_retryable(no_timeout, APIConnectionError("x", request_sent=True))


def test_custom_statuses() -> None:
    """retry_statuses decides for status errors (except engine refusals)."""
    policy = RetryPolicy(retry_statuses={500})
    assert is_retryable(policy, status(APIStatusError, 500))
    assert not is_retryable(policy, status(EngineError, 502))


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [(1, 1.0, 0.5), (2, 1.0, 1.0), (3, 1.0, 2.0), (5, 1.0, 8.0), (9, 1.0, 8.0), (3, 0.25, 0.5)],
)
def test_full_jitter_exponential(attempt: int, rand: float, expected: float) -> None:
    """The wait is rand * min(max_delay, initial_delay * 2**(attempt-1))."""
    error = status(EngineError, 502)
    assert backoff_delay(RetryPolicy(), attempt, error, rand) == pytest.approx(expected)


def test_retry_after_replaces_backoff_up_to_cap() -> None:
    """Retry-After wins over the computed wait, and is cut to max_retry_after."""
    policy = RetryPolicy(max_retry_after=10.0)
    assert backoff_delay(policy, 1, status(RateLimitError, 429, 3.0), 0.0) == 3.0
    assert backoff_delay(policy, 1, status(RateLimitError, 429, 99.0), 0.0) == 10.0
    ignoring = RetryPolicy(respect_retry_after=False)
    assert backoff_delay(ignoring, 1, status(RateLimitError, 429, 3.0), 0.5) == 0.25


def test_remaining_budget_fits_attempt_into_deadline() -> None:
    """An attempt's timeout is cut to what is left of the deadline; <= 0 means it passed."""
    assert remaining_budget(RetryPolicy(), 30.0, 0.0, 100.0) == 30.0
    policy = RetryPolicy(deadline=10.0)
    assert remaining_budget(policy, 30.0, 0.0, 4.0) == 6.0
    assert remaining_budget(policy, 2.0, 0.0, 4.0) == 2.0
    assert remaining_budget(policy, 30.0, 0.0, 11.0) == -1.0


def test_policy_validation_and_none() -> None:
    """Negative values are refused; none() makes a single attempt; repr is readable."""
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="initial_delay"):
        RetryPolicy(initial_delay=-0.1)
    with pytest.raises(ValueError, match="deadline"):
        RetryPolicy(deadline=0)
    assert RetryPolicy.none().max_retries == 0
    assert RetryPolicy() == RetryPolicy()
    assert "max_retries=3" in repr(RetryPolicy())


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (status(EngineError, 502), True),
        (status(EngineRejectedError, 502), False),
        (status(APIStatusError, 500), True),
        (status(APIStatusError, 503), True),
        (status(RateLimitError, 429), True),
        (status(APIStatusError, 408), True),
        (status(APIStatusError, 404), False),
        (status(APIStatusError, 400), False),
        (APIConnectionError("x", request_sent=True), True),
        (APITimeoutError("x", request_sent=False), True),
        (ResponseDecodeError("x", status=200, body=""), False),
    ],
)
def test_outage_classification_ignores_the_policy(error: OsviError, expected: bool) -> None:
    """What the breaker counts as a failure does not depend on what the policy retries."""
    from osvi_async._retry import indicates_outage

    assert indicates_outage(error) is expected


@pytest.mark.parametrize(
    ("error", "maybe"),
    [
        (APIConnectionError("x", request_sent=False), False),
        (APIConnectionError("x", request_sent=True), True),
        (APITimeoutError("x", request_sent=True), True),
        (APITimeoutError("x", request_sent=False), False),
        (
            EngineError("x", status=502, code="Python engine unreachable", body=""),
            False,
        ),
        (EngineError("x", status=502, code="Python engine returned 500 for POST", body=""), True),
        (EngineError("x", status=502, code="engine returned 500: db unreachable", body=""), True),
        (EngineError("x", status=502, code=None, body="<html>"), True),
        (status(EngineRejectedError, 502), False),
        (status(APIStatusError, 503), False),
        (status(APIStatusError, 504), True),
        (status(APIStatusError, 500), True),
        (status(RateLimitError, 429), False),
        (status(APIStatusError, 404), False),
        (ResponseDecodeError("x", status=200, body=""), True),
        (OsviError("x"), False),
    ],
)
def test_maybe_applied_classification(error: OsviError, maybe: bool) -> None:
    """Which failures may have appended the entry anyway."""
    from osvi_async._retry import may_have_been_applied

    assert may_have_been_applied(error) is maybe


@pytest.mark.parametrize(
    ("error", "still"),
    [
        (APIConnectionError("x", request_sent=False), False),
        (APIConnectionError("x", request_sent=True), True),
        (APITimeoutError("x", request_sent=True), True),
        (APITimeoutError("x", request_sent=False), False),
        (EngineError("x", status=502, code="Python engine unreachable", body=""), False),
        # The API relayed the engine's failure: the engine is done with it, settled.
        (EngineError("x", status=502, code="Python engine returned 500 for POST", body=""), False),
        (EngineError("x", status=502, code=None, body="<html>"), True),  # a proxy's page
        (status(EngineRejectedError, 502), False),
        (status(APIStatusError, 503), False),
        (status(APIStatusError, 504), True),
        (APIStatusError("x", status=504, code="gateway timeout", body=""), True),
        (status(APIStatusError, 500), True),
        # A code that does not say the engine answered: it may still be working on it.
        (APIStatusError("x", status=500, code="internal error", body=""), True),
        (EngineError("x", status=502, code="Python engine timed out", body=""), True),
        (status(RateLimitError, 429), False),
        (status(APIStatusError, 404), False),
        (ResponseDecodeError("x", status=200, body=""), True),
        (OsviError("x"), False),
    ],
)
def test_may_still_apply_classification(error: OsviError, still: bool) -> None:
    """Which maybe-applied failures got no final answer from the API, so may apply later."""
    assert may_still_apply(error) is still
    if still:  # "may still apply" is a kind of "maybe applied"
        assert may_have_been_applied(error)


def test_retry_ambiguous_false_refuses_only_maybe_applied() -> None:
    """At-most-once: a sent-then-dropped call is final; an unsent one is still retried."""
    policy = RetryPolicy(retry_ambiguous=False)
    assert not is_retryable(policy, APIConnectionError("x", request_sent=True))
    assert is_retryable(policy, APIConnectionError("x", request_sent=False))
    assert is_retryable(
        policy, EngineError("x", status=502, code="Python engine unreachable", body="")
    )
    assert not is_retryable(policy, EngineError("x", status=502, code=None, body=""))


def test_failed_tls_handshake_is_never_retried_nor_an_outage() -> None:
    """A TLS handshake that failed fails the same way again: no retry, no circuit trip."""
    error = TLSHandshakeError("handshake failed", request_sent=False)
    assert is_retryable(RetryPolicy(), error) is False
    assert indicates_outage(error) is False
    assert is_retryable(RetryPolicy(), APIConnectionError("refused", request_sent=False))
