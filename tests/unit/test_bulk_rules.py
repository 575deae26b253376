"""refused_for_good: which failures hold the rest of a session in a bulk run, and which do not."""

from __future__ import annotations

import pytest

from osvi_async import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    ClientValidationError,
    EngineError,
    EngineRejectedError,
    ItemHeldError,
    NotFoundError,
    OsviError,
    RateLimitError,
    RequestTooLargeError,
    ResponseDecodeError,
    RunStoppedError,
    ServerError,
)
from osvi_async._bulk import refused_for_good


def status(cls: type[APIStatusError], code: int, error: str | None = "x") -> APIStatusError:
    """An error of class `cls` for HTTP status `code`, with the API's `error` code."""
    return cls("x", status=code, code=error, body="")


FOR_GOOD = {
    "invalid item": ClientValidationError("blank context"),
    "400": status(BadRequestError, 400),
    "403": status(APIStatusError, 403),
    "404": status(NotFoundError, 404, "session_not_found"),
    "409": status(APIStatusError, 409),
    "413": status(RequestTooLargeError, 413),
    "422": status(APIStatusError, 422),
    "engine refusal": status(EngineRejectedError, 502),
}

FOR_NOW = {
    "401": status(AuthenticationError, 401),
    "404 not from the API (a proxy's page)": status(NotFoundError, 404, None),
    "408": status(APIStatusError, 408),
    "429": status(RateLimitError, 429),
    "502": status(EngineError, 502),
    "503": status(ServerError, 503),
    "504": status(ServerError, 504),
    "timeout": APITimeoutError("slow", request_sent=True),
    "dropped": APIConnectionError("reset", request_sent=True),
    "never connected": APIConnectionError("refused", request_sent=False),
    "circuit open": CircuitOpenError("open"),
    "unreadable success": ResponseDecodeError("bad", status=200, body=""),
    "stopped": RunStoppedError("stopped", request_sent=False),
    "held": ItemHeldError("held", waiting_for=0),
    "unexpected": OsviError("Unexpected KeyError while sending"),
}


@pytest.mark.parametrize("error", FOR_GOOD.values(), ids=FOR_GOOD.keys())
def test_refusals_for_good_do_not_hold(error: OsviError) -> None:
    """The same item would be refused again: its session's later items are still sent."""
    assert refused_for_good(error)


@pytest.mark.parametrize("error", FOR_NOW.values(), ids=FOR_NOW.keys())
def test_failures_a_later_attempt_could_fix_hold(error: OsviError) -> None:
    """A later attempt could succeed: the session's later items wait for it (held)."""
    assert not refused_for_good(error)
