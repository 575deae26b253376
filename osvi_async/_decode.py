"""Turn an HTTP answer into a model or a typed error; the one place response JSON is read.

Success bodies follow the envelope `{"success": true, "data": {...}}`. Error bodies are
`{"success": false, "error": "<code>"}` (Chat v1), `{"success": false, "errors": [...]}` (the 422
shape of other OSVI endpoints), or, for 502, `{"success": false, "error": ..., "upstream_body":
{...} | null}`. A proxy in front of the API may answer with HTML instead; that is still a typed
error, with `code=None`.
"""

from __future__ import annotations

import email.utils
import math
import re
from datetime import UTC, datetime
from typing import Any, Final

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
# "Python engine returned 422 for POST ..." : the engine answered, and with a client error.
_UPSTREAM_CLIENT_ERROR: Final = re.compile(r"\breturned 4\d\d\b")

_STATUS_CLASSES: Final[dict[int, type[APIStatusError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    413: RequestTooLargeError,
    429: RateLimitError,
}

_HINTS: Final[dict[type[APIStatusError], str]] = {
    BadRequestError: "the API refused the request body; fix the input, retrying will not help",
    AuthenticationError: "check the API token (OSVI dashboard, Settings -> API)",
    NotFoundError: "no such session, or it was closed; open a new session and use its id",
    RequestTooLargeError: "the server refused the body as too large; shorten the context",
    RateLimitError: "too many requests; slow down or lower the concurrency",
    EngineError: "the chat engine failed; this is usually transient",
    EngineRejectedError: "the chat engine refused this request; retrying will not help",
    ServerError: "the OSVI API failed; this is usually transient",
    APIStatusError: "unexpected status for this endpoint",
}


def decode_inject_context(
    status: int, body: bytes, *, session_id: str, attempts: int
) -> InjectContextResult:
    """Decode a 2xx inject_context body, or raise `ResponseDecodeError` naming the JSON path."""
    payload = _load_json(status, body)
    if not isinstance(payload, dict):
        raise _shape_error(status, body, "expected a JSON object at $")
    if payload.get("success") is not True:
        raise _shape_error(status, body, "expected $.success to be true")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise _shape_error(status, body, "expected an object at $.data")
    context = data.get("context")
    if not isinstance(context, list) or not all(isinstance(entry, str) for entry in context):
        raise _shape_error(status, body, "expected a list of strings at $.data.context")
    answered_id = data.get("session_id", session_id)
    if not isinstance(answered_id, str):
        raise _shape_error(status, body, "expected a string at $.data.session_id")
    return InjectContextResult(session_id=answered_id, context=tuple(context), attempts=attempts)


def status_error(
    status: int,
    body: bytes,
    *,
    session_id: str,
    retry_after: str | None,
    attempts: int,
) -> APIStatusError:
    """Build the typed error for a non-2xx answer; never raises."""
    payload = _try_json(body)
    fields = payload if isinstance(payload, dict) else {}
    code = _error_code(fields)
    excerpt = excerpt_of(body)
    delay = parse_retry_after(retry_after)
    if status == 502:
        upstream = fields.get("upstream_body")
        upstream_body = upstream if isinstance(upstream, dict) else None
        engine_class = EngineRejectedError if _is_refusal(code, upstream_body) else EngineError
        message = _message(engine_class, status, code, session_id)
        if upstream_body is not None and "reason" in upstream_body:
            message += f" (engine reason: {upstream_body['reason']})"
        return engine_class(
            message,
            status=status,
            code=code,
            body=excerpt,
            upstream_body=upstream_body,
            session_id=session_id,
            retry_after=delay,
            attempts=attempts,
        )
    error_class = _STATUS_CLASSES.get(status)
    if error_class is None:
        error_class = ServerError if 500 <= status <= 599 else APIStatusError
    return error_class(
        _message(error_class, status, code, session_id),
        status=status,
        code=code,
        body=excerpt,
        session_id=session_id,
        retry_after=delay,
        attempts=attempts,
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


def excerpt_of(body: bytes) -> str:
    """The start of a body as text, for messages and diagnostics."""
    text = body[: BODY_EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    if len(text) > BODY_EXCERPT_CHARS:
        return text[:BODY_EXCERPT_CHARS] + "..."
    return text


def _message(error_class: type[APIStatusError], status: int, code: str | None, sid: str) -> str:
    shown_code = code if code is not None else "no error code"
    hint = _HINTS.get(error_class, _HINTS[APIStatusError])
    return f"inject_context for session {sid} failed: HTTP {status} ({shown_code}): {hint}"


def _error_code(fields: dict[str, Any]) -> str | None:
    error = fields.get("error")
    if isinstance(error, str):
        return error
    errors = fields.get("errors")
    if isinstance(errors, list) and errors and all(isinstance(item, str) for item in errors):
        return "; ".join(errors)
    return None


def _is_refusal(code: str | None, upstream_body: dict[str, Any] | None) -> bool:
    if upstream_body is not None and upstream_body.get("state") == "rejected":
        return True
    return code is not None and _UPSTREAM_CLIENT_ERROR.search(code) is not None


def _load_json(status: int, body: bytes) -> Any:
    try:
        return _json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _shape_error(status, body, "the body is not JSON") from exc


def _try_json(body: bytes) -> Any:
    try:
        return _json.loads(body)
    except (ValueError, RecursionError):
        return None


def _shape_error(status: int, body: bytes, problem: str) -> ResponseDecodeError:
    excerpt = excerpt_of(body)
    return ResponseDecodeError(
        f"Unexpected inject_context response: {problem}; got {excerpt[:200]!r}",
        status=status,
        body=excerpt,
    )
