"""The emulator's answers and body parsing, shared by every endpoint.

Each endpoint module validates a request into ``Prepared``: either an answer to send as is (a
validation failure) or a ``Commit``, the function that applies the request and returns its
success answer. Keeping the two apart is what lets ``EmulatorApp`` put chat-engine faults
*around* the change: before it (nothing applied) or after it (applied, then failed).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web

__all__ = [
    "Commit",
    "Prepared",
    "engine_rejected",
    "error",
    "errors",
    "json_object",
    "optional_string",
    "required_string",
    "success",
]

Commit = Callable[[], web.StreamResponse]
"""Applies a validated request to the state and returns its answer."""

Prepared = web.StreamResponse | Commit
"""A validation failure to send as is, or the commit that a valid request would run."""


def error(status: int, code: str) -> web.Response:
    """The seed's error envelope: ``{"success": false, "error": code}``."""
    return web.json_response({"success": False, "error": code}, status=status)


def errors(problems: list[str]) -> web.Response:
    """A 422 with the Introduction page's envelope: every problem found, in ``errors``."""
    return web.json_response({"success": False, "errors": problems}, status=422)


def success(data: object) -> web.Response:
    """A 200 with ``{"success": true, "data": data}``."""
    return web.json_response({"success": True, "data": data})


def engine_rejected(request: web.BaseRequest, reason: str) -> web.Response:
    """The chat engine refused the request (its 422, relayed as a 502 with its body)."""
    body = {
        "success": False,
        "error": f"Python engine returned 422 for {request.method} {request.path}",
        "upstream_body": {"state": "rejected", "reason": reason},
    }
    return web.json_response(body, status=502)


def json_object(raw: bytes) -> dict[str, object] | None:
    """Parse a request body that must be a JSON object; None when it is anything else."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def required_string(body: dict[str, object], name: str, problems: list[str]) -> str:
    """Return ``body[name]``, a non-blank string; else note the problem and return ""."""
    value = body.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.append(f"{name} is required")
    elif not isinstance(value, str):
        problems.append(f"{name} must be a string")
    else:
        return value
    return ""


def optional_string(body: dict[str, object], name: str, problems: list[str]) -> str | None:
    """Return ``body[name]`` when given as a non-blank string, None when absent or null.

    A blank string is a problem rather than "absent": an emulator that quietly ignored it would
    hide the client bug that sent it.
    """
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(f"{name} must be a string")
    elif not value.strip():
        problems.append(f"{name} must not be blank")
    else:
        return value
    return None
