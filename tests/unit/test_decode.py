"""Decoding answers into models and typed errors, and reading Retry-After."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime

import pytest

from osvi_async import EngineError, EngineRejectedError, ResponseDecodeError, ServerError
from osvi_async._decode import (
    BODY_EXCERPT_CHARS,
    REDACTED,
    Scrubber,
    decode_inject_context,
    escape_controls,
    excerpt_of,
    parse_retry_after,
    status_error,
)
from tests.support import SESSION_ID, TOKEN

OTHER_SESSION = "0b5e3c1a-9f2d-4c7e-8a61-3d2f1e0c9b8a"

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def test_decode_ignores_unknown_keys_and_falls_back_to_requested_id() -> None:
    """Extra keys are ignored; a missing data.session_id means the session we asked about."""
    body = json.dumps({"success": True, "data": {"context": ["x"], "extra": 1}, "meta": {}})
    result = decode_inject_context(200, body.encode(), session_id=SESSION_ID, attempts=2)
    assert (result.session_id, result.context, result.attempts) == (SESSION_ID, ("x",), 2)


def test_decode_error_quotes_excerpt_and_status() -> None:
    """The decode error keeps the status and quotes what came back."""
    with pytest.raises(ResponseDecodeError) as caught:
        decode_inject_context(201, b"<html>oops</html>", session_id=SESSION_ID, attempts=1)
    assert caught.value.status == 201
    assert "<html>oops</html>" in str(caught.value)


def test_deeply_nested_json_is_a_decode_error() -> None:
    """Pathological nesting is reported as a decode error, not a RecursionError."""
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ResponseDecodeError):
        decode_inject_context(200, body, session_id=SESSION_ID, attempts=1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        ("Thu, 26 Nov 2026 12:00:30 GMT", 30.0),
        ("Thu, 26 Nov 2026 11:00:00 GMT", 0.0),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Delta-seconds and HTTP dates are read; junk and non-finite values are ignored."""
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_date_without_zone_is_utc() -> None:
    """An HTTP date with '-0000' (no zone) is taken as UTC."""
    assert parse_retry_after("Thu, 26 Nov 2026 12:00:10 -0000", now=NOW) == 10.0


def test_status_error_502_shapes() -> None:
    """502 bodies: null upstream is EngineError, a rejected upstream is EngineRejectedError."""
    plain = status_error(
        502,
        b'{"success": false, "error": "engine down", "upstream_body": null}',
        session_id=SESSION_ID,
        retry_after=None,
        attempts=1,
    )
    assert type(plain) is EngineError
    assert plain.upstream_body is None
    rejected = status_error(
        502,
        b'{"success": false, "error": "x", "upstream_body": {"state": "rejected"}}',
        session_id=SESSION_ID,
        retry_after="2",
        attempts=3,
    )
    assert type(rejected) is EngineRejectedError
    assert (rejected.retry_after, rejected.attempts) == (2.0, 3)
    odd = status_error(
        502, b'{"upstream_body": [1]}', session_id=SESSION_ID, retry_after=None, attempts=1
    )
    assert type(odd) is EngineError
    assert odd.upstream_body is None
    assert odd.code is None


def test_status_error_other_5xx_and_odd_bodies() -> None:
    """A 599 is a ServerError; an 'errors' list that is not all strings gives no code."""
    error = status_error(
        599, b'{"errors": [1, "a"]}', session_id=SESSION_ID, retry_after=None, attempts=1
    )
    assert type(error) is ServerError
    assert error.code is None
    assert "no error code" in str(error)


def test_excerpt_is_truncated_and_tolerates_bad_utf8() -> None:
    """Excerpts stop at BODY_EXCERPT_CHARS and replace undecodable bytes."""
    assert excerpt_of(b"\xff\xfeok") == "\ufffd\ufffdok"
    long = excerpt_of(b"a" * 10_000)
    assert long == "a" * BODY_EXCERPT_CHARS + "..."


def test_success_for_another_session_is_a_decode_error() -> None:
    """A 200 naming another session answers some other request: ResponseDecodeError."""
    body = json.dumps({"success": True, "data": {"session_id": OTHER_SESSION, "context": ["x"]}})
    with pytest.raises(ResponseDecodeError) as caught:
        decode_inject_context(200, body.encode(), session_id=SESSION_ID, attempts=1)
    assert OTHER_SESSION in str(caught.value)
    assert SESSION_ID in str(caught.value)


def test_session_ids_are_compared_case_insensitively() -> None:
    """The same UUID in upper case is the same session; the answer is accepted."""
    body = json.dumps({"success": True, "data": {"session_id": SESSION_ID.upper(), "context": []}})
    result = decode_inject_context(200, body.encode(), session_id=SESSION_ID, attempts=1)
    assert result.session_id == SESSION_ID.upper()


@pytest.mark.parametrize(
    "echoed",
    [
        TOKEN,
        TOKEN.upper(),
        "".join(f"\\u{ord(char):04x}" for char in TOKEN),  # JSON-escaped, every character
        TOKEN[:4] + "\\u" + f"{ord(TOKEN[4]):04X}" + TOKEN[5:],  # one character escaped
        "".join(f"%{ord(char):02X}" for char in TOKEN),  # percent-encoded
    ],
)
def test_scrubber_redacts_every_form_of_the_token(echoed: str) -> None:
    """Plain, JSON-escaped (any mix, either hex case) and percent-encoded forms are redacted."""
    text = Scrubber(TOKEN).redact(f"API-Token: {echoed}; next")
    assert text == f"API-Token: {REDACTED}; next"


def test_scrubber_text_escapes_control_characters() -> None:
    """Messages and log lines get newlines, ESC and line separators as escapes."""
    assert escape_controls("a\nb\r\x1b[31m\u2028") == "a\\nb\\r\\x1b[31m\\u2028"
    assert Scrubber(TOKEN).text(f"x\n{TOKEN}") == f"x\\n{REDACTED}"


def test_status_error_redacts_code_body_and_upstream_body() -> None:
    """A 502 echoing the token: attributes redacted, message also free of control chars."""
    body = json.dumps(
        {
            "success": False,
            "error": f"bad\nAPI-Token: {TOKEN}",
            "upstream_body": {"headers": {"API-Token": TOKEN}, "reason": f"\n{TOKEN}"},
        }
    ).encode()
    error = status_error(
        502,
        body,
        session_id=SESSION_ID,
        retry_after=None,
        attempts=1,
        scrubber=Scrubber(TOKEN),
    )
    assert error.code == f"bad\nAPI-Token: {REDACTED}"
    assert isinstance(error, EngineError)
    assert error.upstream_body == {"headers": {"API-Token": REDACTED}, "reason": f"\n{REDACTED}"}
    for text in (str(error), repr(error), error.body):
        assert TOKEN not in text
    assert "\n" not in str(error)
    assert "\\n" in str(error)


def test_excerpt_redacts_before_cutting() -> None:
    """A token straddling the excerpt's end is redacted whole, never shown in part."""
    body = ("a" * (BODY_EXCERPT_CHARS - 4) + TOKEN).encode()
    shown = excerpt_of(body, Scrubber(TOKEN).redact)
    assert TOKEN[:4] not in shown
    assert shown.startswith("a" * (BODY_EXCERPT_CHARS - 4) + REDACTED[:4])


HTML_TOKEN = "tok&0123<456'89>"


@pytest.mark.parametrize(
    "echoed",
    [
        html.escape(HTML_TOKEN),  # &amp; &lt; &#x27; &gt;
        HTML_TOKEN.replace("&", "&#38;").replace("<", "&#060;").replace("'", "&#39;"),
        HTML_TOKEN.replace("'", "&apos;").replace(">", "&#X3E;"),
    ],
)
def test_scrubber_redacts_html_escaped_token(echoed: str) -> None:
    """Named and numeric HTML character references spell the token too."""
    assert echoed != HTML_TOKEN
    text = Scrubber(HTML_TOKEN).redact(f"<pre>API-Token: {echoed}</pre>")
    assert text == f"<pre>API-Token: {REDACTED}</pre>"


def test_success_bucket_is_redacted_only_when_the_body_may_hold_the_token() -> None:
    """A bucket echoing the token is redacted; a plain body skips the regex altogether."""
    scrubber = Scrubber(TOKEN)
    echoing = {"success": True, "data": {"session_id": SESSION_ID, "context": [TOKEN, "a"]}}
    body = json.dumps(echoing).encode()
    assert scrubber.may_hold_secret(body)
    result = decode_inject_context(200, body, session_id=SESSION_ID, attempts=1, scrubber=scrubber)
    assert result.context == (REDACTED, "a")
    plain = {"success": True, "data": {"session_id": SESSION_ID, "context": ["a", "b"]}}
    assert not scrubber.may_hold_secret(json.dumps(plain).encode())
    for marker in ("\\u0041", "50%", "&amp;"):
        assert scrubber.may_hold_secret(marker.encode())
