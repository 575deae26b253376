"""Every error osvi-async raises, in one tree.

Catch `OsviError` to handle anything the SDK can raise; catch a leaf to act on one cause::

    OsviError
    ├── ClientValidationError (also ValueError)   bad input, caught before any byte is sent
    ├── ClientClosedError                         the client was used after close()
    ├── APIConnectionError                        no HTTP answer came back
    │   ├── APITimeoutError                       ... because a timeout ran out
    │   └── TLSHandshakeError                     ... because TLS failed: never retried
    ├── APIStatusError                            the API answered with an error status
    │   ├── BadRequestError          400, 422
    │   ├── AuthenticationError      401
    │   ├── NotFoundError            404
    │   ├── RequestTooLargeError     413  never retried
    │   ├── RateLimitError           429
    │   ├── EngineError              502  the upstream chat engine failed
    │   │   └── EngineRejectedError       ... and refused this request: never retried
    │   └── ServerError              other 5xx
    ├── ResponseDecodeError                       a success status with a body we cannot read
    ├── CircuitOpenError                          a bulk run stopped sending: the API kept failing
    ├── ItemHeldError                             a bulk item held back to keep its session in order
    └── RunStoppedError                           a bulk run was closed before this item finished

`APIConnectionError.request_sent` separates "never connected" (the entry certainly was not
applied, safe to retry) from "sent, no answer" (the entry may have been applied), for one
attempt. `OsviError.may_have_been_applied` answers for the whole call, all attempts included:
when it is False, sending the entry again cannot double it.

No message, attribute or repr here ever holds the API token: the errors are built from the
status, the response body and the session id only, and whatever they quote from the server
has the token redacted (and, in messages, control characters escaped).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "CircuitOpenError",
    "ClientClosedError",
    "ClientValidationError",
    "EngineError",
    "EngineRejectedError",
    "ItemHeldError",
    "NotFoundError",
    "OsviError",
    "RateLimitError",
    "RequestTooLargeError",
    "ResponseDecodeError",
    "RunStoppedError",
    "ServerError",
    "TLSHandshakeError",
]


class OsviError(Exception):
    """Base class of every error raised by osvi-async.

    Attributes:
        attempts: How many HTTP attempts were made before this error was raised (0 when the
            error came before anything was sent).
        may_have_been_applied: Whether any attempt of the failed call may have appended the
            entry anyway (the request went out and no clear refusal came back, on this or an
            earlier attempt). False means the entry was certainly not applied, so sending
            it again cannot make a duplicate.
    """

    attempts: int
    may_have_been_applied: bool

    def __init__(self, message: str, *, attempts: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.may_have_been_applied = False

    @property
    def message(self) -> str:
        """The human-readable message, without the attempt count."""
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        if self.attempts > 1:
            return f"{self.message} (after {self.attempts} attempts)"
        return self.message


class ClientValidationError(OsviError, ValueError):
    """The arguments are invalid; nothing was sent.

    Raised for a blank or non-string `context`, a context longer than `max_context_bytes` (the
    message names both sizes), a `session_id` that is not a UUID, a missing or malformed API
    token, or a `base_url` that is not https (http is allowed for loopback only) or has a
    query, a fragment, whitespace or control characters. Fix the input: retrying cannot help.
    """


class ClientClosedError(OsviError, RuntimeError):
    """The client was closed before the call, or while the call waited for a pooled
    connection; nothing was sent. Create a new client (or keep the one open longer)."""


class APIConnectionError(OsviError):
    """No HTTP response was received: the connection failed or dropped.

    Attributes:
        request_sent: False when the request certainly never reached the server (the connection
            could not be opened), so the entry was not applied. True when the request may have
            reached the server before the failure, so the entry may have been applied.
    """

    request_sent: bool

    def __init__(self, message: str, *, request_sent: bool, attempts: int = 0) -> None:
        super().__init__(message, attempts=attempts)
        self.request_sent = request_sent


class APITimeoutError(APIConnectionError):
    """No response arrived within the timeout (per attempt, or the retry policy's deadline)."""


class TLSHandshakeError(APIConnectionError):
    """The TLS handshake failed: the certificate is not trusted, or the port does not speak TLS.

    Nothing was sent (`request_sent` is False), and it is never retried: the same handshake
    would fail the same way. Check `base_url` (an `https://` URL pointing at a plain-HTTP port
    fails like this) and the certificate store.
    """


class APIStatusError(OsviError):
    """The API answered with a non-success HTTP status.

    Attributes:
        status: The HTTP status code.
        code: The API's machine-readable `error` string (for example `session_not_found`), the
            `errors` list joined with "; " (the shape OSVI's 422 answers use), or None when the
            body carried neither (an HTML page from a proxy, say).
        body: The start of the response body, decoded as text and truncated; for diagnostics.
        session_id: The chat session the request was for, or None when it was addressed
            otherwise (creating a session, looking one up, sending a message by customer).
        retry_after: The server's `Retry-After`, in seconds, when it sent one.
        errors: The `errors` list of a validation answer (OSVI's 422 shape), one message per
            problem; empty when the body had none.
    """

    status: int
    code: str | None
    body: str
    session_id: str | None
    retry_after: float | None
    errors: tuple[str, ...]

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None,
        body: str,
        session_id: str | None = None,
        retry_after: float | None = None,
        attempts: int = 0,
        errors: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, attempts=attempts)
        self.status = status
        self.code = code
        self.body = body
        self.session_id = session_id
        self.retry_after = retry_after
        self.errors = errors


class BadRequestError(APIStatusError):
    """400 or 422: the API refused the body (`context_required`; a 422 lists every problem in
    `errors`, such as `agent_uuid is required`)."""


class AuthenticationError(APIStatusError):
    """401: the API token is missing or not valid for this account."""


class NotFoundError(APIStatusError):
    """404: no such session (`session_not_found`): the id is wrong or the session was closed;
    from `get_active_session`, the customer has no active session with that agent."""


class RequestTooLargeError(APIStatusError):
    """413: the server refused the body as too large. Never retried; shorten the context.

    The client refuses a context longer than `max_context_bytes` before sending it, so this
    comes only from a server whose limit is lower than the client's.
    """


class RateLimitError(APIStatusError):
    """429: too many requests; `retry_after` says how long the server asks us to wait."""


class EngineError(APIStatusError):
    """502: the upstream chat engine could not be reached or failed.

    Usually transient and retried by default.

    Attributes:
        upstream_body: The engine's own error body as the API relayed it (a JSON object), or
            None when the engine said nothing (unreachable) or the 502 came from a proxy.
    """

    upstream_body: dict[str, Any] | None

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None,
        body: str,
        upstream_body: dict[str, Any] | None = None,
        session_id: str | None = None,
        retry_after: float | None = None,
        attempts: int = 0,
        errors: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            message,
            status=status,
            code=code,
            body=body,
            session_id=session_id,
            retry_after=retry_after,
            attempts=attempts,
            errors=errors,
        )
        self.upstream_body = upstream_body


class EngineRejectedError(EngineError):
    """502 in which the engine deliberately refused the request.

    Recognised by `upstream_body["state"] == "rejected"` or by an `error` naming an upstream 4xx
    ("Python engine returned 422 ..."). The same request would be refused again, so it is never
    retried; `upstream_body["reason"]` usually says why.
    """


class ServerError(APIStatusError):
    """5xx other than 502: the API itself failed (503 and 504 are retried by default)."""


class ResponseDecodeError(OsviError):
    """The API answered with a success status but a body that is not the documented shape.

    Also raised for a success naming another session than the request's (compared
    case-insensitively): it answers some other request. The request may well have been
    applied (`may_have_been_applied` is True), so it is not retried. The message quotes a
    short excerpt of what came back, with the API token redacted.

    Attributes:
        status: The HTTP status code.
        body: The start of the response body, decoded as text and truncated.
    """

    status: int
    body: str

    def __init__(self, message: str, *, status: int, body: str, attempts: int = 0) -> None:
        super().__init__(message, attempts=attempts)
        self.status = status
        self.body = body


class CircuitOpenError(OsviError):
    """A bulk run's circuit breaker stayed open too long; this item was not sent (this time).

    The API kept failing, so the run stopped sending instead of piling retries onto it. The
    entry was not applied by the attempt that was refused; earlier attempts of the same item,
    if any, are reported in `attempts`.
    """


class ItemHeldError(OsviError):
    """A bulk item was not sent because an earlier item of its session did not succeed.

    Sending it anyway would put the session's entries out of input order. It was certainly not
    applied by this run (`may_have_been_applied` is True only when the request says an earlier
    run may have applied it). Send it again, after the item it waits for, for example with
    `osvi-async bulk --resume`.

    Attributes:
        waiting_for: The input index of the earlier item of the same session that failed.
    """

    waiting_for: int

    def __init__(self, message: str, *, waiting_for: int) -> None:
        super().__init__(message, attempts=0)
        self.waiting_for = waiting_for


class RunStoppedError(OsviError):
    """A bulk run was closed or cancelled before this item finished.

    Attributes:
        request_sent: False when the item was never sent (it was still queued), so it was
            certainly not applied. True when it was in flight: it may have been applied.
    """

    request_sent: bool

    def __init__(self, message: str, *, request_sent: bool, attempts: int = 0) -> None:
        super().__init__(message, attempts=attempts)
        self.request_sent = request_sent
