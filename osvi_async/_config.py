"""Configuration values: defaults, the retry policy, and the resolved client settings.

Everything here is a frozen, keyword-only attrs value, validated when it is built. An override
makes a new value (`attrs.evolve`); nothing is mutated after construction.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import attrs

from osvi_async._validation import (
    check_api_token,
    check_base_url,
    check_bool,
    check_callable,
    check_count,
    check_positive_int,
    check_seconds,
    check_statuses,
    check_timeout,
)
from osvi_async.errors import ClientValidationError

if TYPE_CHECKING:
    from osvi_async.errors import OsviError

__all__ = ["CircuitBreaker", "ClientConfig", "RetryBudget", "RetryEvent", "RetryPolicy"]

TOKEN_ENV_VAR: Final = "OSVI_API_TOKEN"  # noqa: S105 - the name of a variable, not a secret
BASE_URL_ENV_VAR: Final = "OSVI_BASE_URL"
DEFAULT_BASE_URL: Final = "https://api.osvi.ai"
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_MAX_CONNECTIONS: Final = 100
#: Real answers are a few hundred bytes; anything past this is a broken or hostile server.
DEFAULT_MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024
#: Largest context, in UTF-8 bytes, sent at all: a bigger one is refused before the upload.
DEFAULT_MAX_CONTEXT_BYTES: Final = 1_048_576
#: 408 Request Timeout, 429 Too Many Requests, 502 engine failure, 503 and 504 from the edge.
DEFAULT_RETRY_STATUSES: Final = frozenset({408, 429, 502, 503, 504})


@attrs.frozen(kw_only=True)
class RetryEvent:
    """What `RetryPolicy.on_retry` is told before each backoff sleep.

    Attributes:
        attempt: The number of the attempt that just failed (1 for the first).
        delay: How long, in seconds, the client will sleep before the next attempt.
        error: The error the failed attempt raised.
    """

    attempt: int
    delay: float
    error: OsviError


# attrs validators: each calls the same check_* function as the client's own arguments, so
# every bad option raises ClientValidationError (a ValueError), whichever object it was given to.


def _non_negative(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_seconds(attribute.name, value, allow_zero=True)


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    check_seconds(attribute.name, value, allow_zero=False)


def _optional_positive(
    _instance: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None:
        check_seconds(attribute.name, value, allow_zero=False)


def _flag(_instance: object, attribute: attrs.Attribute[bool], value: bool) -> None:
    check_bool(attribute.name, value)


def _optional_flag(
    _instance: object, attribute: attrs.Attribute[bool | None], value: bool | None
) -> None:
    if value is not None and not isinstance(value, bool):
        raise ClientValidationError(
            f"{attribute.name} must be True, False or None, got {type(value).__name__}"
        )


def _hook(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_callable(attribute.name, value)


def _count_from(minimum: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    def validate(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        check_count(attribute.name, value, minimum=minimum)

    return validate


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a failed call is retried. Immutable; derive variants with `attrs.evolve`.

    Every field is checked when the policy is built; a bad value raises
    `ClientValidationError` (a `ValueError`): delays must be finite, `retry_statuses` a
    collection of int status codes from 100 to 599 (not a str).

    The first attempt of every call is made without any retry machinery; only a retryable
    failure enters the backoff loop. Waits are exponential with full jitter: before retry *n*
    the client sleeps a uniformly random time in `[0, min(max_delay, initial_delay * 2**(n-1))]`.
    A `Retry-After` header, when honoured, replaces that wait (up to `max_retry_after`).

    A 502 that the engine marks as a refusal (`EngineRejectedError`) is never retried, nor is
    any 4xx outside `retry_statuses` (413 included), nor a success with an unreadable body or
    for another session, nor a failed TLS handshake (`TLSHandshakeError`). A call whose task is
    being cancelled never retries: it raises `asyncio.CancelledError`.

    What a failure after which the request may have been applied (it was sent and the
    connection dropped or timed out, or the engine failed after taking it) does depends on
    the endpoint, because no OSVI endpoint has an idempotency key (docs/retries.md has the
    table): reads and state-setting commands (takeover, end, close) are retried;
    `inject_context` and `whisper` append, and a lost entry is usually worse than a repeated
    one, so they are retried too and the result is flagged `possible_duplicate` (always after
    an attempt that may still apply later, such as a timeout, a dropped connection, a 504 or
    a proxy's page; otherwise unless the returned bucket rules a duplicate out);
    `create_session`, `send_message`, `tell` and plain operator messages are not retried (a
    repeat could close the session just opened, or say something to the customer twice): the
    error is raised with `may_have_been_applied=True` and a hint on how to check.
    `retry_ambiguous=False` makes every endpoint at-most-once, `True` makes every endpoint
    retry such failures; `None` (the default) lets each endpoint's class decide.

    Attributes:
        max_retries: Retries after the first attempt; 3 means at most 4 attempts.
        initial_delay: Upper bound, in seconds, of the first backoff wait.
        max_delay: Upper bound, in seconds, of any backoff wait.
        retry_statuses: HTTP statuses that are retried.
        retry_connection_errors: Whether to retry when no response came back.
        retry_timeouts: Whether to retry when an attempt timed out.
        retry_ambiguous: Whether to retry failures after which the request may have been
            applied (see above): None lets the endpoint decide, False gives at-most-once
            delivery everywhere, True retries them everywhere.
        respect_retry_after: Whether a `Retry-After` header sets the wait.
        max_retry_after: Longest `Retry-After`, in seconds, that is obeyed as given; a longer
            one is cut to this.
        deadline: Seconds from the start of the call after which no further attempt starts,
            or None for no deadline. An attempt's own timeout is shortened to fit inside it.
        on_retry: Called with a `RetryEvent` before every backoff sleep (for metrics).
        sleep: The coroutine used to wait; tests pass a fake that records instead of sleeping.
        random: Returns a float in [0, 1) for the jitter; tests pass a fixed one.
    """

    max_retries: int = attrs.field(default=3, validator=_count_from(0))
    initial_delay: float = attrs.field(default=0.5, validator=_non_negative)
    max_delay: float = attrs.field(default=8.0, validator=_non_negative)
    retry_statuses: frozenset[int] = attrs.field(
        default=DEFAULT_RETRY_STATUSES, converter=check_statuses
    )
    retry_connection_errors: bool = attrs.field(default=True, validator=_flag)
    retry_timeouts: bool = attrs.field(default=True, validator=_flag)
    retry_ambiguous: bool | None = attrs.field(default=None, validator=_optional_flag)
    respect_retry_after: bool = attrs.field(default=True, validator=_flag)
    max_retry_after: float = attrs.field(default=60.0, validator=_non_negative)
    deadline: float | None = attrs.field(default=None, validator=_optional_positive)
    on_retry: Callable[[RetryEvent], None] | None = attrs.field(
        default=None, eq=False, validator=_hook
    )
    sleep: Callable[[float], Awaitable[None]] = attrs.field(
        default=asyncio.sleep, eq=False, repr=False, validator=_hook
    )
    random: Callable[[], float] | None = attrs.field(
        default=None, eq=False, repr=False, validator=_hook
    )

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries: every call makes exactly one attempt."""
        return cls(max_retries=0)


def _resolve_token(value: str | None) -> str:
    token = value if value is not None else os.environ.get(TOKEN_ENV_VAR)
    return check_api_token(token, env_var=TOKEN_ENV_VAR)


def _resolve_base_url(value: str | None) -> str:
    url = value if value is not None else os.environ.get(BASE_URL_ENV_VAR) or DEFAULT_BASE_URL
    return check_base_url(url)


@attrs.frozen(kw_only=True)
class ClientConfig:
    """The settings one `OsviClient` runs with, resolved and checked once at construction.

    `api_token` is hidden from the repr so that logging a config never leaks it.
    """

    api_token: str = attrs.field(repr=False)
    base_url: str
    timeout: float = attrs.field(default=DEFAULT_TIMEOUT, converter=check_timeout)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    max_connections: int = attrs.field(default=DEFAULT_MAX_CONNECTIONS, validator=_count_from(1))
    max_response_bytes: int = attrs.field(
        default=DEFAULT_MAX_RESPONSE_BYTES, validator=_count_from(1024)
    )
    max_context_bytes: int = attrs.field(
        default=DEFAULT_MAX_CONTEXT_BYTES, validator=_count_from(1)
    )

    @classmethod
    def resolve(
        cls,
        *,
        api_token: str | None,
        base_url: str | None,
        timeout: float,
        retry: RetryPolicy | None,
        max_connections: int,
        max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES,
    ) -> ClientConfig:
        """Build a config from constructor arguments, falling back to the environment."""
        return cls(
            api_token=_resolve_token(api_token),
            base_url=_resolve_base_url(base_url),
            timeout=timeout,
            retry=retry if retry is not None else RetryPolicy(),
            max_connections=check_positive_int("max_connections", max_connections),
            max_context_bytes=check_positive_int("max_context_bytes", max_context_bytes),
        )


@attrs.frozen(kw_only=True)
class RetryBudget:
    """A cap on retries shared by every call of one bulk run (a token bucket).

    Each item's first attempt earns `per_request` retry tokens and each success earns
    `per_success` more, up to `max_tokens`; every retry spends one. When the bucket is empty, a
    failed attempt is final even if its `RetryPolicy` would allow more.

    The bound this gives: a run of N items that sees S successes sends at most
    `N * (1 + per_request) + S * per_success` requests. With the defaults, a total outage (no
    successes) costs at most 2 requests per item, whatever `max_retries` says, while a run
    in which most calls succeed can still retry each failure several times.

    Attributes:
        per_request: Tokens earned by each item's first attempt.
        per_success: Tokens earned by each successful attempt.
        max_tokens: Most tokens the bucket holds, so that a long healthy run cannot bank an
            unbounded number of retries for the next outage. None means
            `max(100, 4 * concurrency)`.
    """

    per_request: float = attrs.field(default=1.0, validator=_non_negative)
    per_success: float = attrs.field(default=1.0, validator=_non_negative)
    max_tokens: float | None = attrs.field(default=None, validator=_optional_positive)


@attrs.frozen(kw_only=True)
class CircuitBreaker:
    """When a bulk run stops sending because the API keeps failing, and how it recovers.

    After `failure_threshold` retryable failures in a row (502, 503, 504, 429, 408, timeouts,
    dropped connections), the circuit opens: no attempt is sent, and items wait. After a
    cool-down one probe attempt goes out; if it succeeds, the circuit closes and every waiting
    item proceeds; if it fails, the cool-down doubles (up to `max_cooldown`) and the circuit
    stays open. Items are not failed while they wait, so a short outage costs time, not data.
    If the circuit stays open for `give_up_after` seconds, waiting attempts fail with
    `CircuitOpenError` (certainly not applied) and the run finishes.

    Attributes:
        failure_threshold: Consecutive retryable failures that open the circuit.
        cooldown: Seconds before the first probe.
        max_cooldown: Longest wait between probes, in seconds.
        give_up_after: Seconds the circuit may stay open before waiting items fail.
    """

    failure_threshold: int = attrs.field(default=10, validator=_count_from(1))
    cooldown: float = attrs.field(default=0.5, validator=_positive)
    max_cooldown: float = attrs.field(default=8.0, validator=_positive)
    give_up_after: float = attrs.field(default=120.0, validator=_positive)


DEFAULT_CONCURRENCY: Final = 64
DEFAULT_RETRY_BUDGET: Final = RetryBudget()
DEFAULT_CIRCUIT_BREAKER: Final = CircuitBreaker()
