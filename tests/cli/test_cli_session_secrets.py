"""The session commands never print the API token, even from a server that echoes it back
in a session, a reply or an error page (as a misconfigured proxy or debug build may)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tests.cli.test_cli import osvi

SECRET = "tok_5ecret012345"
SESSION = "4718a326-417b-4dda-90d0-21fd65a11cb8"


def _session(token: str) -> dict[str, Any]:
    """A ChatSession whose customer id, fields and context all hold the echoed token."""
    return {
        "id": SESSION,
        "chat_agent_id": 1,
        "account_id": 1,
        "customer_id": f"c {token}",
        "mode": "ai",
        "help_requested": False,
        "status": "active",
        "current_state": token,
        "metadata": {
            "input_fields": {"echo": token},
            "state_fields": {token: [token]},
            "context": [f"API-Token: {token}"],
        },
        "active_human": None,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }


async def _active(request: web.Request) -> web.Response:
    token = request.headers["API-Token"]
    data: object = _session(token)
    if "agent_uuid" not in request.query:
        data = {"agent_x": data}
    return web.json_response({"success": True, "data": data})


async def _create(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"success": True, "data": _session(request.headers["API-Token"])})


async def _inbound(request: web.Request) -> web.Response:
    await request.read()
    token = request.headers["API-Token"]
    data = {"session_id": SESSION, "reply": f"you sent {token}", "state": token, "mode": "ai"}
    return web.json_response({"success": True, "data": data})


async def _support(request: web.Request) -> web.Response:
    """A 502 whose error and upstream body echo every request header, token included."""
    await request.read()
    echoed = "\n".join(f"{name}: {value}" for name, value in request.headers.items())
    body = {"success": False, "error": echoed, "upstream_body": {"reason": echoed}}
    return web.json_response(body, status=502)


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[str]:
    """Serve the Chat v1 routes on 127.0.0.1, each echoing the token; yields the base URL."""
    app = web.Application()
    app.router.add_get("/v1/chat/session/active", _active)
    app.router.add_post("/v1/chat/session", _create)
    app.router.add_post("/v1/chat/inbound", _inbound)
    app.router.add_post("/v1/chat/session/{id}/support", _support)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    try:
        await site.start()
        yield f"http://127.0.0.1:{site.port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "args",
    [
        ["session", "get", "--customer", "c", "--agent", "a"],
        ["session", "get", "--customer", "c", "--json"],
        ["session", "create", "--customer", "c", "--agent", "a", "--json"],
        ["message", "send", "--customer", "c", "--agent", "a", "hi"],
        ["message", "send", "--customer", "c", "--agent", "a", "hi", "--json"],
        ["support", SESSION, "end", "--timeout", "2"],
    ],
)
async def test_a_server_echoing_the_token_never_gets_it_printed(args: list[str]) -> None:
    """Echoed in a session, a reply or a 502: not on stdout or stderr; [REDACTED] instead."""
    async with echo_server() as base_url:
        result = await osvi(*args, "--token", SECRET, "--base-url", base_url)
    printed = result.out + result.err
    assert SECRET not in printed
    assert SECRET[:8] not in printed
    assert "[REDACTED]" in printed
    assert "Traceback" not in result.err
    assert result.code in {0, 1}, result.err
