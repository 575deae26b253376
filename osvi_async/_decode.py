"""Turn an HTTP answer into a model or a typed error; the one place response JSON is read.

Success bodies follow the envelope `{"success": true, "data": {...}}`. Error bodies are
`{"success": false, "error": "<code>"}` (Chat v1), `{"success": false, "errors": [...]}` (the 422
shape of other OSVI endpoints), or, for 502, `{"success": false, "error": ..., "upstream_body":
{...} | null}`. A proxy in front of the API may answer with HTML instead; that is still a typed
error, with `code=None`.

Server text is data, not trusted: whatever the server sends back is quoted only through a
`Scrubber`, which redacts the API token (a server or proxy may echo the request headers) from
attributes, and also escapes control characters in messages and log lines (log injection).
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, TypeGuard

from osvi_async import _json
from osvi_async.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    EngineError,
    EngineRejectedError,
    NotFoundError,
    RateLimitError,
    RequestTooLargeError,
    ResponseDecodeError,
    ServerError,
)
from osvi_async.models import InjectContextResult

BODY_EXCERPT_CHARS: Final = 500
REDACTED: Final = "[REDACTED]"
# "Python engine returned 422 for POST ..." : the engine answered, and with a client error.
_UPSTREAM_CLIENT_ERROR: Final = re.compile(r"\breturned 4\d\d\b")

_STATUS_CLASSES: Final[dict[int, type[APIStatusError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    422: BadRequestError,
    404: NotFoundError,
    413: RequestTooLargeError,
    429: RateLimitError,
}

_HINTS: Final[dict[type[APIStatusError], str]] = {
    BadRequestError: "the API refused the request body; fix the input, retrying will not help",
    AuthenticationError: "check the API token (OSVI dashboard, Settings -> API)",
    NotFoundError: "no such session, or it was closed; open a new session and use its id",
    RequestTooLargeError: "the server refused the body as too large; send less text",
    RateLimitError: "too many requests; slow down or lower the concurrency",
    EngineError: "the chat engine failed; this is usually transient",
    EngineRejectedError: "the chat engine refused this request; retrying will not help",
    ServerError: "the OSVI API failed; this is usually transient",
    APIStatusError: "unexpected status for this endpoint",
}


class Scrubber:
    """Makes server text safe to quote: the API token redacted, control characters escaped.

    The token is found in its plain form and in the forms a server may echo it in: JSON
    string escapes (each character as itself, `\\uXXXX` or a backslash escape), percent
    encoding and HTML character references (`&amp;`, `&#39;`, `&#x27;`, as `html.escape` or a
    proxy's error page writes them), in any mix.
    """

    __slots__ = ("_markers", "_pattern")

    def __init__(self, secret: str) -> None:
        self._pattern = _secret_pattern(secret) if secret else None
        # What a body must contain for the token to be spelled in it at all: the token itself,
        # or the start of an escape that could write one of its characters.
        escape = b"\\" if any(char in "\"\\/'" for char in secret) else b"\\u"
        self._markers: tuple[bytes, bytes] | None = (
            (secret.encode("utf-8", "surrogatepass"), escape) if secret else None
        )

    def may_hold_secret(self, body: bytes) -> bool:
        """Whether `body` may spell the token: four substring scans, no regex, no decoding.

        False means it certainly does not; True means `redact` has to look.
        """
        markers = self._markers
        if markers is None:
            return False
        # Spelled out rather than any() over a generator: this runs on every answer.
        return markers[0] in body or markers[1] in body or b"%" in body or b"&" in body

    def redact(self, text: str) -> str:
        """`text` with every form of the token replaced by `[REDACTED]`; for attributes."""
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def text(self, text: str) -> str:
        """`text` redacted and with control characters escaped; for messages and log lines."""
        return escape_controls(self.redact(text))

    def value(self, value: Any) -> Any:
        """A decoded JSON value with every string in it (keys included) redacted."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self.redact(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value


NO_SECRET: Final = Scrubber("")
"""Escapes control characters only; for callers that hold no token."""


def escape_controls(text: str) -> str:
    """`text` with every non-printable character (newlines, ESC, ...) written as an escape."""
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def _secret_pattern(secret: str) -> re.Pattern[str]:
    forms: list[str] = []
    for char in secret:
        options = [re.escape(char)]
        code = ord(char)
        if code > 0xFFFF:  # a JSON escape writes it as a surrogate pair
            high, low = divmod(code - 0x10000, 0x400)
            options.append(rf"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}")
        else:
            options.append(rf"\\u{code:04x}")
        if char in "\"\\/'":
            options.append(re.escape("\\" + char))
        options.append("".join(f"%{byte:02x}" for byte in char.encode("utf-8")))
        # HTML character references: numeric (any zero padding), and the named ones
        # html.escape and proxies' error pages use.
        options.extend((f"&#0*{code};", f"&#x0*{code:x};"))
        named = _HTML_NAMED.get(char)
        if named is not None:
            options.append(re.escape(named))
        forms.append("(?:" + "|".join(options) + ")")
    # Hex digits in either case; a case variant of the token is redacted too, which is harmless.
    return re.compile("".join(forms), re.IGNORECASE)


_HTML_NAMED: Final = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}


def decode_data(status: int, body: bytes, scrubber: Scrubber, operation: str) -> Any:
    """The `data` of a success envelope `{"success": true, "data": ...}`, or raise
    `ResponseDecodeError` naming what is wrong; `data` itself is returned as decoded."""
    payload = _load_json(status, body, scrubber, operation)
    if not isinstance(payload, dict):
        raise shape_error(status, body, "expected a JSON object at $", scrubber, operation)
    if payload.get("success") is not True:
        raise shape_error(status, body, "expected $.success to be true", scrubber, operation)
    if "data" not in payload:
        raise shape_error(status, body, "missing required key $.data", scrubber, operation)
    return payload["data"]


def check_answered_session(
    status: int,
    body: bytes,
    answered_id: object,
    *,
    session_id: str,
    scrubber: Scrubber,
    operation: str,
) -> str:
    """The session id a success names, which must be the requested one (case-insensitively).

    A success for another session answers some other request, and ours may have been applied:
    a `ResponseDecodeError`, which callers mark as maybe applied.
    """
    if not isinstance(answered_id, str):
        raise shape_error(
            status, body, "expected a string at $.data.session_id", scrubber, operation
        )
    if answered_id != session_id and answered_id.lower() != session_id.lower():
        shown = scrubber.redact(answered_id)[:60]  # redact before cutting: never half a token
        raise shape_error(
            status,
            body,
            f"$.data.session_id is {shown!r}, not the session {session_id} this request was for",
            scrubber,
            operation,
        )
    return answered_id


def decode_inject_context(
    status: int,
    body: bytes,
    *,
    session_id: str,
    attempts: int,
    scrubber: Scrubber = NO_SECRET,
) -> InjectContextResult:
    """Decode a 2xx inject_context body, or raise `ResponseDecodeError` naming the JSON path.

    A success naming another session than `session_id` (compared case-insensitively) is a
    `ResponseDecodeError` too: it answers some other request, and ours may have been applied.
    The token is redacted from the returned bucket, when a cheap scan of the body says it may
    be there at all (so a normal success pays a few substring searches, not a regex).
    """
    operation = "inject_context"
    data = decode_data(status, body, scrubber, operation)
    if not isinstance(data, dict):
        raise shape_error(status, body, "expected an object at $.data", scrubber, operation)
    context = data.get("context")
    if not _is_list_of_str(context):
        raise shape_error(
            status, body, "expected a list of strings at $.data.context", scrubber, operation
        )
    answered_id = data.get("session_id", session_id)
    if answered_id != session_id:
        answered_id = check_answered_session(
            status, body, answered_id, session_id=session_id, scrubber=scrubber, operation=operation
        )
    if scrubber.may_hold_secret(body):
        # A server echoing the request headers into the bucket must not put the token into
        # the caller's result (and from there into reprs and logs). The session id needs no
        # redaction: it was just checked to be the one requested.
        context = [scrubber.redact(entry) for entry in context]
    return InjectContextResult(session_id=answered_id, context=tuple(context), attempts=attempts)


def _is_list_of_str(value: object) -> TypeGuard[list[str]]:
    # A loop, not all() over a generator: this runs on every answer.
    if type(value) is not list:
        return False
    for entry in value:  # noqa: SIM110
        if type(entry) is not str:
            return False
    return True


def status_error(
    status: int,
    body: bytes,
    *,
    session_id: str | None,
    retry_after: str | None,
    attempts: int,
    scrubber: Scrubber = NO_SECRET,
    operation: str = "inject_context",
    target: str | None = None,
    not_found_hint: str | None = None,
) -> APIStatusError:
    """Build the typed error for a non-2xx answer; never raises.

    Its `code`, `body` and `upstream_body` are redacted by `scrubber`, and its message also
    has control characters escaped. The message starts with `operation` and `target` (what
    the call was for: "session <id>" by default); `not_found_hint` replaces the generic hint
    of a 404, for endpoints where a 404 means something else than "no such session".
    """
    payload = _try_json(body)
    fields = payload if isinstance(payload, dict) else {}
    raw_code = _error_code(fields)
    errors = _error_list(fields, scrubber)
    what = f"{operation} for {target or f'session {session_id}'}"
    code = None if raw_code is None else scrubber.redact(raw_code)
    excerpt = excerpt_of(body, scrubber.redact)
    delay = parse_retry_after(retry_after)
    if status == 502:
        upstream = fields.get("upstream_body")
        upstream_body = scrubber.value(upstream) if isinstance(upstream, dict) else None
        engine_class = EngineRejectedError if _is_refusal(raw_code, upstream) else EngineError
        message = _message(engine_class, status, code, what)
        if upstream_body is not None and "reason" in upstream_body:
            reason = scrubber.text(str(upstream_body["reason"]))[:BODY_EXCERPT_CHARS]
            message += f" (engine reason: {reason})"
        return engine_class(
            message,
            status=status,
            code=code,
            body=excerpt,
            upstream_body=upstream_body,
            session_id=session_id,
            retry_after=delay,
            attempts=attempts,
            errors=errors,
        )
    error_class = _STATUS_CLASSES.get(status)
    if error_class is None:
        error_class = ServerError if 500 <= status <= 599 else APIStatusError
    hint = not_found_hint if error_class is NotFoundError else None
    return error_class(
        _message(error_class, status, code, what, hint),
        status=status,
        code=code,
        body=excerpt,
        session_id=session_id,
        retry_after=delay,
        attempts=attempts,
        errors=errors,
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date), else None."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def excerpt_of(body: bytes, redact: Callable[[str], str] | None = None) -> str:
    """The start of a body as text, for diagnostics; `redact` runs before the cut, so that a
    token is never shown half."""
    # A margin past the longest excerpt, so a token (even percent-encoded) that starts inside
    # the excerpt ends inside the decoded window and is redacted whole.
    text = body[: BODY_EXCERPT_CHARS * 4 + 1024].decode("utf-8", errors="replace")
    if redact is not None:
        text = redact(text)
    if len(text) > BODY_EXCERPT_CHARS:
        return text[:BODY_EXCERPT_CHARS] + "..."
    return text


def _message(
    error_class: type[APIStatusError],
    status: int,
    code: str | None,
    what: str,
    hint: str | None = None,
) -> str:
    shown_code = "no error code" if code is None else escape_controls(code[:BODY_EXCERPT_CHARS])
    if hint is None:
        hint = _HINTS.get(error_class, _HINTS[APIStatusError])
    return f"{escape_controls(what)} failed: HTTP {status} ({shown_code}): {hint}"


def _error_code(fields: dict[str, Any]) -> str | None:
    error = fields.get("error")
    if isinstance(error, str):
        return error
    errors = fields.get("errors")
    if isinstance(errors, list) and errors and all(isinstance(item, str) for item in errors):
        return "; ".join(errors)
    return None


def _error_list(fields: dict[str, Any], scrubber: Scrubber) -> tuple[str, ...]:
    errors = fields.get("errors")
    if isinstance(errors, list):
        return tuple(scrubber.redact(item) for item in errors if isinstance(item, str))
    return ()


def _is_refusal(code: str | None, upstream_body: Any) -> bool:
    if isinstance(upstream_body, dict) and upstream_body.get("state") == "rejected":
        return True
    return code is not None and _UPSTREAM_CLIENT_ERROR.search(code) is not None


def _load_json(status: int, body: bytes, scrubber: Scrubber, operation: str) -> Any:
    try:
        return _json.loads(body)
    except (ValueError, RecursionError):
        # No chain: the JSON parser's message quotes the body, which may hold the token.
        pass
    raise shape_error(status, body, "the body is not JSON", scrubber, operation)


def _try_json(body: bytes) -> Any:
    try:
        return _json.loads(body)
    except (ValueError, RecursionError):
        return None


def shape_error(
    status: int, body: bytes, problem: str, scrubber: Scrubber, operation: str
) -> ResponseDecodeError:
    """The error for a success whose body is not the documented shape; `problem` says how."""
    excerpt = excerpt_of(body, scrubber.redact)
    # repr() escapes control characters; the excerpt is already redacted.
    return ResponseDecodeError(
        f"Unexpected {operation} response: {problem}; got {excerpt[:200]!r}",
        status=status,
        body=excerpt,
    )
