"""JSON for the hot path: orjson when it is installed (the `fast` extra), else the stdlib.

Both produce and accept the same documents for what the API exchanges; orjson is several
times faster at encoding a request body and decoding an answer, which is a good part of the
SDK's own CPU per call. Both raise UnicodeEncodeError for text UTF-8 cannot carry (lone
surrogates) and ValueError for a body that is not JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["BACKEND", "dumps", "loads"]


def stdlib_dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON with the standard library."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def stdlib_loads(data: bytes) -> Any:
    """Parse JSON bytes with the standard library."""
    return json.loads(data)


dumps: Callable[[Any], bytes] = stdlib_dumps
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
    loads = orjson.loads
    BACKEND = "orjson"
