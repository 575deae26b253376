"""One API call, any endpoint, from first attempt to final answer: the attempt loop.

Read `call` top to bottom: send, decode, and on a failure classify it (may it have been
applied? may it still apply later?), decide (the endpoint's safety class, the policy, the
run's retry budget), back off (`_retry.Backoff`, tenacity's primitives) and go round again.
The endpoint (method, decoder, safety class) is data from `_endpoints`; nothing here knows
which endpoint it runs.

The success path touches none of the retry machinery: the backoff is built on the first
failure. An optional `AttemptGate` lets a bulk run pause attempts (circuit breaker, rate
limit) and ration retries (retry budget) across many calls. With OpenTelemetry configured
(`_telemetry`), the same loop runs inside a call span; without it, one `is None` check.

Log records carry structured fields in `extra` (`event`, `endpoint`, `attempt`, `delay`,
`status`, `code`; see docs/observability.md), so that a JSON formatter needs no parsing.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol, TypeVar

from osvi_async._config import RetryEvent, RetryPolicy
from osvi_async._decode import escape_controls, status_error
from osvi_async._endpoints import Endpoint
from osvi_async._logging import api_code, failure_for_logs
from osvi_async._retry import (
    Backoff,
    failure_summary,
    indicates_outage,
    is_retryable,
    logger,
    may_have_been_applied,
    may_still_apply,
    raise_if_cancelling,
    remaining_budget,
)
from osvi_async._transport import RawResponse, Transport
from osvi_async.errors import (
    APIStatusError,
    APITimeoutError,
    ClientClosedError,
    OsviError,
    ResponseDecodeError,
)

if TYPE_CHECKING:
    from osvi_async._telemetry import Telemetry

T = TypeVar("T")


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


async def call(  # noqa: PLR0912, PLR0915 - the one attempt loop, read top to bottom
    transport: Transport,
    endpoint: Endpoint[T],
    url: str,
    body: bytes | None,
    *,
    timeout: float,
    policy: RetryPolicy,
    session_id: str = "",
    target: str | None = None,
    log_target: str | None = None,
    entry: str = "",
    gate: AttemptGate | None = None,
    resent: bool = False,
    telemetry: Telemetry | None = None,
) -> T:
    """Run one call of `endpoint` with retries, and return its decoded, accepted result.

    `session_id` is the session the request is for ("" when it is addressed otherwise),
    `target` what error messages call it when not "session <id>", `log_target` what log
    records call it instead (a customer-addressed call: its pseudonym, never the id; the
    records then leave out error messages, which may name the customer), `entry` the text the
    endpoint's `accept` checks the answer against. `resent` says an earlier send of the same request
    (an earlier call or run) may have applied it: the call starts as if after an attempt that
    may still apply. `telemetry`, when given, traces and counts the call (`_telemetry`).
    """
    if telemetry is not None:
        return await telemetry.call(
            call, transport, endpoint, url, body, timeout=timeout, policy=policy,
            session_id=session_id, target=target, log_target=log_target, entry=entry,
            gate=gate, resent=resent,
        )  # fmt: skip
    started = time.monotonic()
    number = 1
    applied = unsettled = resent  # may an attempt have applied it / may one still apply it
    backoff: Backoff | None = None
    previous: OsviError | None = None
    while True:
        try:
            attempt_timeout = timeout
            if policy.deadline is not None or (gate is not None and not gate.ready(number)):
                attempt_timeout = await _wait_for_turn(
                    gate, number, policy=policy, timeout=timeout, started=started
                )
            try:
                response = await transport.send(endpoint.method, url, body, timeout=attempt_timeout)
                result = _settle(transport, endpoint, response, number, session_id, target)
            except OsviError as exc:
                exc.attempts = number
                if gate is not None:
                    gate.after_attempt(exc, outage=indicates_outage(exc))
                raise
            except BaseException:
                if gate is not None:
                    gate.attempt_abandoned()
                raise
            if gate is not None:
                gate.after_attempt(None, outage=False)
        except OsviError as failure:
            error = failure
            if isinstance(error, ClientClosedError) and previous is not None:
                # Closed during the backoff: the last real failure says what happened (a
                # request cut off by close() is "sent, no answer"), not the retry that could
                # not start.
                error = previous
            maybe = endpoint.safety.changes_state and may_have_been_applied(error)
            applied = applied or maybe
            unsettled = unsettled or (maybe and may_still_apply(error))
            delay = None
            if error is not previous and is_retryable(policy, error, endpoint.safety):
                backoff = backoff or Backoff(policy, started)
                delay = backoff.delay(number, error, time.monotonic())
                if delay is not None and gate is not None and not gate.allow_retry():
                    delay = None
            if delay is None:
                what = target or f"session {session_id}"
                _give_up(error, endpoint, applied, number, what, log_target)
                if error is failure:
                    raise
                raise error from None
            # A cancel that the transport turned into another error must not lead to a resend.
            raise_if_cancelling()
            _before_sleep(
                policy, endpoint, error, number, delay, log_target or f"session {session_id}",
                private=log_target is not None,
            )  # fmt: skip
            previous = error
            await policy.sleep(delay)
            raise_if_cancelling()  # a custom sleep may have swallowed the cancel
            number += 1
            continue
        if endpoint.accept is not None:
            return endpoint.accept(result, entry, applied, not unsettled)
        return result


def _give_up(  # noqa: PLR0917 - private; what the error and the log line say
    error: OsviError,
    endpoint: Endpoint[T],
    applied: bool,
    number: int,
    what: str,
    log_what: str | None,
) -> None:
    """Mark the final error: which call failed (`what`), whether any attempt may have applied
    the request, and if so what a repeat could do (the endpoint's recovery hint); log it at
    DEBUG (the caller gets the error itself; the line closes the retry lines' story), naming
    the call `log_what` when given (a customer's pseudonym: the error names the customer)."""
    error.may_have_been_applied = applied
    message = error.message
    prefix = f"{endpoint.name} for {what}"
    if not isinstance(error, APIStatusError | ResponseDecodeError) and prefix not in message:
        # Status errors name the call already; connection errors only say what broke.
        message = f"{escape_controls(prefix)}: {message}"
    if applied and endpoint.recovery is not None and endpoint.recovery not in message:
        message = f"{message}; {endpoint.recovery}"
    if message != error.message:
        error.args = (message,)
    logger.debug(
        "%s for %s: giving up after %d attempt(s) (%s)",
        endpoint.name,
        log_what or what,
        number,
        _summary(error, private=log_what is not None),
        extra=_fields("give_up", endpoint, number, None, error)
        | {"may_have_been_applied": applied},
    )


def _fields(
    event: str, endpoint: Endpoint[T], attempt: int, delay: float | None, error: OsviError
) -> dict[str, object]:
    """A log record's structured fields (`extra`): bounded values, no server free text (a
    code only when it looks like one)."""
    fields: dict[str, object] = {
        "event": event,
        "endpoint": endpoint.name,
        "attempt": attempt,
        "error_type": type(error).__name__,
    }
    if delay is not None:
        fields["delay"] = delay
    if isinstance(error, APIStatusError):
        fields["status"] = error.status
        code = api_code(error.code)
        if code is not None:
            fields["code"] = code
    return fields


def _summary(error: OsviError, *, private: bool) -> str:
    """The failure for a log line: status and code (when it is one) for an answer; for a
    call that names a customer (`private`), no error message (it may quote the URL, which
    holds the id, or a server's echo), else the message, control characters escaped."""
    if private or isinstance(error, APIStatusError):
        return failure_for_logs(error)
    return failure_summary(error)


def _before_sleep(  # noqa: PLR0917 - what the retry log line and hook report
    policy: RetryPolicy,
    endpoint: Endpoint[T],
    error: OsviError,
    number: int,
    delay: float,
    what: str,
    *,
    private: bool,
) -> None:
    logger.info(
        "%s for %s: attempt %d failed (%s); retrying in %.3f s",
        endpoint.name,
        what,
        number,
        _summary(error, private=private),
        delay,
        extra=_fields("retry", endpoint, number, delay, error),
    )
    if policy.on_retry is not None:
        try:
            policy.on_retry(RetryEvent(attempt=number, delay=delay, error=error))
        except Exception:
            # A metrics hook that fails must not turn a typed failure (which says whether
            # the request may have been applied) into a bare exception: log it, go on.
            logger.warning(
                "%s for %s: the on_retry hook raised; ignored",
                endpoint.name,
                what,
                exc_info=True,
                extra=_fields("on_retry_failed", endpoint, number, delay, error),
            )


def _settle(  # noqa: PLR0917 - private, hot path: positional on purpose
    transport: Transport,
    endpoint: Endpoint[T],
    response: RawResponse,
    number: int,
    session_id: str,
    target: str | None,
) -> T:
    """The endpoint's result for a 2xx answer, else the typed error for its status."""
    status = response.status
    if 200 <= status < 300:
        return endpoint.decode(
            status,
            response.body,
            session_id=session_id,
            attempts=number,
            scrubber=transport.scrubber,
        )
    raise status_error(
        status,
        response.body,
        session_id=session_id or None,
        retry_after=response.retry_after,
        attempts=number,
        scrubber=transport.scrubber,
        operation=endpoint.name,
        target=target,
        not_found_hint=endpoint.not_found_hint,
    )


async def _wait_for_turn(
    gate: AttemptGate | None,
    number: int,
    *,
    policy: RetryPolicy,
    timeout: float,
    started: float,
) -> float:
    """Wait until the gate lets attempt `number` through; return its timeout, cut to what is
    left of the deadline. Raises, the gate given back, when the attempt cannot be sent."""
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
    return budget
