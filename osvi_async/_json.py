"""JSON for the hot path: orjson when it is installed (the `fast` extra), else the stdlib.

Both produce and accept the same documents for what the API exchanges; orjson is several
times faster at encoding a request body and decoding an answer, which is a good part of the
SDK's own CPU per call. Both raise UnicodeEncodeError for text UTF-8 cannot carry (lone
surrogates) and ValueError for a body that is not JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

__all__ = ["BACKEND", "dumps", "dumps_string", "loads"]


# json.dumps builds a new encoder for every call with non-default options: one made once
# saves about a microsecond per request.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# The C scanner json.loads ends in, without the two regex matches around it that only skip
# whitespace an API answer does not have (a document it cannot take whole goes to json.loads).
_SCAN_ONCE = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def stdlib_dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON with the standard library."""
    return _ENCODER.encode(value).encode("utf-8")


def stdlib_dumps_string(text: str) -> bytes:
    """`text` as a JSON string literal in UTF-8, escaped exactly as `stdlib_dumps` does."""
    return encode_basestring(text).encode("utf-8")


def stdlib_loads(data: bytes) -> Any:
    """Parse JSON bytes with the standard library, exactly as `json.loads` does.

    Answers are UTF-8 (RFC 8259) with nothing around the value: decoding them as such and
    scanning the value directly skips json.loads's sniffing of the encoding and its
    whitespace matching. Anything else (a BOM, UTF-16, whitespace, a body that is not
    JSON) takes json.loads's own path, with its own result or error.
    """
    try:
        text = data.decode("utf-8")
        value, end = _SCAN_ONCE(text, 0)
    except (UnicodeDecodeError, StopIteration):
        return json.loads(data)
    if end != len(text):
        return json.loads(data)
    return value


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
