"""Input checks that run before anything goes on the wire.

Each check either returns the value to use or raises `ClientValidationError` with a message that
says what is wrong and what is expected. Messages never quote the API token.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from typing import Final
from urllib.parse import urlsplit

from osvi_async import _json
from osvi_async.errors import ClientValidationError

API_TOKEN_LENGTH: Final = 16
# ASCII only on purpose: `\d` and `\w` would admit Unicode digits and look-alikes.
_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})


def check_session_id(session_id: object) -> str:
    """Return `session_id` as a plain str if it is a UUID; it becomes a path segment.

    A `str` subclass is copied to a plain `str` first: its own `__format__` or `__str__`
    could otherwise put something else in the URL than what was validated.
    """
    if type(session_id) is not str:
        if not isinstance(session_id, str):
            raise ClientValidationError(
                f"session_id must be a str (a session UUID), got {type(session_id).__name__}"
            )
        session_id = str.__str__(session_id)  # the characters themselves, as a plain str
    if _UUID.fullmatch(session_id) is None:
        raise ClientValidationError(
            f"session_id must be a session UUID like 4718a326-417b-4dda-90d0-21fd65a11cb8, "
            f"got {_excerpt(session_id)}"
        )
    return session_id


def is_session_id(value: str) -> bool:
    """Whether `value` is a session UUID (ASCII hex, 8-4-4-4-12), safe in a URL path."""
    return _UUID.fullmatch(value) is not None


def check_context(context: object) -> str:
    """Return `context` as a plain str if it has some non-whitespace text in it.

    A `str` subclass is copied to a plain `str`, so that its own methods (`encode`, say)
    cannot change what is measured or sent.
    """
    if type(context) is not str:
        if not isinstance(context, str):
            raise ClientValidationError(f"context must be a str, got {type(context).__name__}")
        context = str.__str__(context)
    if not context.strip():
        raise ClientValidationError("context must not be empty or only whitespace")
    return context


MAX_IDENTIFIER_CHARS: Final = 1000
"""Longest `customer_id` or `agent_uuid` accepted: they travel in a URL's query string."""


def check_text(name: str, value: object, *, max_bytes: int | None = None) -> str:
    """Return `value` as a plain str if it has some non-whitespace text and is valid Unicode
    (a message, or the content of one), at most `max_bytes` of UTF-8 when given."""
    if type(value) is not str:
        if not isinstance(value, str):
            raise ClientValidationError(f"{name} must be a str, got {type(value).__name__}")
        value = str.__str__(value)
    if not value.strip():
        raise ClientValidationError(f"{name} must not be empty or only whitespace")
    _check_unicode(name, value)
    if max_bytes is not None:
        size = len(value.encode("utf-8"))
        if size > max_bytes:
            raise ClientValidationError(
                f"{name} is {size} bytes of UTF-8, more than max_context_bytes={max_bytes}"
            )
    return value


def check_identifier(name: str, value: object) -> str:
    """Return an identifier (`customer_id`, `agent_uuid`) as a plain str: non-blank, without
    leading or trailing whitespace, printable (no control, zero-width or other invisible
    characters), at most 1000 characters."""
    value = check_text(name, value)
    if value != value.strip():
        # " cus5 " is another customer than "cus5": padding is almost always a slip, and
        # silently sending it would open or address the wrong customer's session.
        raise ClientValidationError(
            f"{name} must not start or end with whitespace, got {_excerpt(value)}"
        )
    if not value.isprintable():
        raise ClientValidationError(
            f"{name} must be printable text, without control or invisible characters, "
            f"got {_excerpt(value)}"
        )
    if len(value) > MAX_IDENTIFIER_CHARS:
        raise ClientValidationError(
            f"{name} must be at most {MAX_IDENTIFIER_CHARS} characters, got {len(value)}"
        )
    return value


def _check_unicode(name: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        index = next(i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff")
        raise ClientValidationError(
            f"{name} is not valid Unicode text (unpaired surrogate at index {index})"
        ) from exc


def encode_json_value(name: str, value: object, max_bytes: int) -> bytes:
    """Encode a caller's free-form value (`input_fields`) as strict JSON: no NaN or
    infinity (they are not JSON), keys as strings, at most `max_bytes`."""
    try:
        _check_keys(value)
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except RecursionError:
        raise ClientValidationError(f"{name} is nested too deeply to send as JSON") from None
    except (TypeError, ValueError) as exc:
        raise ClientValidationError(f"{name} cannot be sent as JSON: {exc}") from None
    try:
        data = encoded.encode("utf-8")
    except UnicodeEncodeError:
        raise ClientValidationError(
            f"{name} is not valid Unicode text (it holds an unpaired surrogate)"
        ) from None
    if len(data) > max_bytes:
        raise ClientValidationError(
            f"{name} is {len(data)} bytes of JSON, more than max_context_bytes={max_bytes}"
        )
    return data


def _check_keys(value: object) -> None:
    """Refuse object keys that are not strings: JSON would turn 1 into "1", and {1: a, "1": b}
    into an object with one key twice."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"keys must be strings, got {type(key).__name__} {key!r}"[:120])
            _check_keys(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_keys(item)


def encode_body(body: dict[str, object]) -> bytes:
    """Encode a request body of checked strings (and pre-checked values) as JSON."""
    return _json.dumps(body)


def encode_inject_body(context: str, max_context_bytes: int) -> bytes:
    """Encode the request body, refusing a context over `max_context_bytes` UTF-8 bytes.

    Lone surrogates, which UTF-8 cannot carry, are a usage error too. The size is checked on
    the text before JSON escaping, as the user counts it.
    """
    try:
        size = len(context.encode("utf-8"))
    except UnicodeEncodeError as exc:
        index = next(i for i, ch in enumerate(context) if "\ud800" <= ch <= "\udfff")
        raise ClientValidationError(
            f"context is not valid Unicode text (unpaired surrogate at index {index})"
        ) from exc
    if size > max_context_bytes:
        raise ClientValidationError(
            f"context is {size} bytes of UTF-8, more than max_context_bytes={max_context_bytes}"
        )
    # The body is one key around a string: written directly, it costs a fifth of encoding
    # a dict (the same bytes as _json.dumps({"context": context})).
    return b'{"context":' + _json.dumps_string(context) + b"}"


def check_api_token(token: object, *, env_var: str) -> str:
    """Return the token if it looks like an OSVI API token (16 printable ASCII characters)."""
    if token is None or token == "":
        raise ClientValidationError(
            f"No API token: pass api_token=... or set the {env_var} environment variable "
            "(the 16-character token from the OSVI dashboard, Settings -> API)"
        )
    if not isinstance(token, str):
        raise ClientValidationError(f"api_token must be a str, got {type(token).__name__}")
    if len(token) != API_TOKEN_LENGTH:
        raise ClientValidationError(
            f"api_token must be {API_TOKEN_LENGTH} characters long, got {len(token)}"
        )
    if not token.isascii() or any(ch.isspace() or not ch.isprintable() for ch in token):
        # It goes into an HTTP header, which carries ASCII; never quote it back.
        raise ClientValidationError(
            "api_token must be printable ASCII characters only (letters, digits, punctuation; "
            "no whitespace, control or non-ASCII characters)"
        )
    return token


def check_base_url(url: object) -> str:
    """Return the base URL without a trailing slash; it must be https, or http on loopback.

    No query or fragment, not even an empty `?` or `#` marker, and no whitespace or control
    characters: the endpoint path is appended to it, so they would end up in the request line.
    """
    if not isinstance(url, str):
        raise ClientValidationError(f"base_url must be a str, got {type(url).__name__}")
    url = str.__str__(url)
    if not url.isprintable() or any(char.isspace() for char in url):
        raise ClientValidationError(
            f"base_url must not contain whitespace or control characters, got {url!r}"
        )
    if "?" in url or "#" in url:
        raise ClientValidationError(f"base_url must not have a query or fragment, got {url!r}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise ClientValidationError(f"base_url is not a valid URL: {url!r}") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise ClientValidationError(
            f"base_url must be an absolute http(s) URL like https://api.osvi.ai, got {url!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise ClientValidationError("base_url must not contain credentials; use api_token")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ClientValidationError(
            f"base_url must use https (http is allowed only for loopback hosts), got {url!r}"
        )
    return url.rstrip("/")


def check_timeout(timeout: object) -> float:
    """Return the timeout as a float number of seconds; it must be finite and positive."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ClientValidationError(
            f"timeout must be a number of seconds, got {type(timeout).__name__}"
        )
    if not math.isfinite(timeout) or timeout <= 0:
        raise ClientValidationError(f"timeout must be a positive number of seconds, got {timeout}")
    return float(timeout)


def check_positive_int(name: str, value: object) -> int:
    """Return `value` if it is a whole number of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClientValidationError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ClientValidationError(f"{name} must be >= 1, got {value}")
    return value


def check_rate(value: object) -> float:
    """Return a rate limit in requests per second; it must be finite and positive."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClientValidationError(
            f"rate_limit must be a number of requests per second, got {type(value).__name__}"
        )
    if not math.isfinite(value) or value <= 0:
        raise ClientValidationError(f"rate_limit must be a positive number, got {value}")
    return float(value)


def check_seconds(name: str, value: object, *, allow_zero: bool) -> float:
    """Return a duration in seconds as a float: a finite number, >= 0 or > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClientValidationError(
            f"{name} must be a number of seconds, got {type(value).__name__}"
        )
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ClientValidationError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_count(name: str, value: object, *, minimum: int) -> int:
    """Return `value` if it is a whole number (not a bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClientValidationError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ClientValidationError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return `value` if it is a real bool: a truthy string like "no" must not pass as True."""
    if not isinstance(value, bool):
        raise ClientValidationError(f"{name} must be True or False, got {_excerpt(repr(value))}")
    return value


def check_callable(name: str, value: object) -> None:
    """Refuse a hook that cannot be called, when it is given, not when it would first run."""
    if not callable(value):
        raise ClientValidationError(f"{name} must be callable, got {type(value).__name__}")


def check_statuses(value: object) -> frozenset[int]:
    """Return a collection of HTTP status codes as a frozenset of ints from 100 to 599.

    A str is refused although it is iterable: `"502"` would be the characters 5, 0, 2.
    """
    if isinstance(value, str | bytes | bytearray) or not isinstance(
        value, set | frozenset | list | tuple
    ):
        raise ClientValidationError(
            "retry_statuses must be a set of HTTP status codes like {502, 503}, "
            f"got {type(value).__name__}"
        )
    for status in value:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ClientValidationError(
                f"retry_statuses must hold HTTP status codes, each an int from 100 to 599, "
                f"got {_excerpt(repr(status))}"
            )
    return frozenset(value)


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _excerpt(text: str, limit: int = 60) -> str:
    shown = text if len(text) <= limit else text[:limit] + "..."
    return repr(shown)
