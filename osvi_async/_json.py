"""JSON for the hot path: orjson when it is installed (the `fast` extra), else the stdlib.

Both produce the same bytes for what the API exchanges and accept the same documents:
strict JSON in UTF-8 (tests/unit/test_json.py runs both on the edge cases). orjson is
several times faster at encoding a request body and decoding an answer; without it the
stdlib path skips what json.dumps and json.loads do around their C cores. Both raise
UnicodeEncodeError for text UTF-8 cannot carry (lone surrogates) and ValueError for a body
that is not JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

__all__ = ["BACKEND", "dumps", "dumps_string", "loads"]


# json.dumps builds a new encoder for every call with non-default options: one made once
# saves about a microsecond per request.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"{text} does not fit a float")
    return number


# NaN and Infinity are not JSON, and 1e400 is no float: refused, as orjson refuses them.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
# The C scanner json.loads ends in, without the two regex matches around it that only skip
# whitespace an API answer does not have.
_SCAN_ONCE = _DECODER.scan_once  # type: ignore[attr-defined]


def stdlib_dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON with the standard library."""
    return _ENCODER.encode(value).encode("utf-8")


def stdlib_dumps_string(text: str) -> bytes:
    """`text` as a JSON string literal in UTF-8, escaped exactly as `stdlib_dumps` does."""
    return encode_basestring(text).encode("utf-8")


def stdlib_loads(data: bytes) -> Any:
    """Parse JSON bytes with the standard library, taking what orjson takes.

    That is strict JSON in UTF-8 (RFC 8259): json.loads would also take UTF-16 and a byte
    order mark, NaN and Infinity, and escapes of lone surrogates (a string no UTF-8 can
    carry); all of those raise ValueError here. The value is scanned directly, which skips
    json.loads's sniffing of the encoding and its whitespace matching.
    """
    text = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    try:
        value, end = _SCAN_ONCE(text, 0)
    except StopIteration:
        value, end = _DECODER.decode(text), len(text)  # leading whitespace, or not JSON
    if end != len(text):
        value = _DECODER.decode(text)  # trailing whitespace, or trailing data
    if "\\ud" in text or "\\uD" in text:
        _refuse_lone_surrogates(value)
    return value


def _refuse_lone_surrogates(value: Any) -> None:
    if isinstance(value, str):
        value.encode("utf-8")  # UnicodeEncodeError (a ValueError) for a lone surrogate
    elif isinstance(value, dict):
        for key, item in value.items():
            key.encode("utf-8")
            _refuse_lone_surrogates(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_lone_surrogates(item)


dumps: Callable[[Any], bytes] = stdlib_dumps
dumps_string: Callable[[str], bytes] = stdlib_dumps_string
loads: Callable[[bytes], Any] = stdlib_loads
BACKEND = "json"

try:
    import orjson
except ImportError:  # pragma: no cover - the dev extra installs orjson
    pass
else:

    def orjson_dumps(value: Any) -> bytes:
        """Compact UTF-8 JSON with orjson; its encode errors come out as the stdlib's."""
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            raise UnicodeEncodeError("utf-8", "", 0, 1, str(exc)) from exc

    dumps = orjson_dumps
    dumps_string = orjson_dumps
    loads = orjson.loads
    BACKEND = "orjson"
