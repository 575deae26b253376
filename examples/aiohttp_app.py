"""An aiohttp.web backend that adds a note to a customer's chat: one OsviClient for the app.

Run it against the emulator (or the real API, with your token)::

    export OSVI_API_TOKEN=tok_0123456789ab OSVI_BASE_URL=http://127.0.0.1:8081
    python -m osvi_async.testing --port 8081 --token $OSVI_API_TOKEN &
    osvi-async session create --agent agent_emulator --customer +15551112222
    PORT=8000 python examples/aiohttp_app.py

    curl -X POST http://127.0.0.1:8000/customers/+15551112222/notes \\
        -H 'content-type: application/json' \\
        -d '{"agent_uuid": "agent_emulator", "note": "Voice call ended: wants a refund."}'

On SIGTERM (or Ctrl+C) `web.run_app` stops listening, lets the handlers in flight finish (up
to `shutdown_timeout`, 10 s here), then runs the cleanup contexts: the client is closed last,
once no handler can still use it, and the process exits 0.
"""

from __future__ import annotations

import logging
import os

from aiohttp import web

from osvi_async import ClientValidationError, NotFoundError, OsviError
from osvi_async.integrations.aiohttp import OSVI_CLIENT, get_osvi_client, osvi_client_context

logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
logger = logging.getLogger("aiohttp_app")
routes = web.RouteTableDef()


@routes.post("/customers/{customer_id}/notes")
async def add_note(request: web.Request) -> web.Response:
    """Append the note to the customer's active session with the agent."""
    try:
        body = await request.json()
    except ValueError as error:  # not JSON, or not UTF-8: the caller's mistake, not ours
        raise web.HTTPBadRequest(text="expected a JSON object") from error
    if not isinstance(body, dict):
        raise web.HTTPUnprocessableEntity(text="expected a JSON object")
    agent_uuid, note = body.get("agent_uuid"), body.get("note")
    if not isinstance(agent_uuid, str) or not isinstance(note, str):
        raise web.HTTPUnprocessableEntity(text="'agent_uuid' and 'note' must be strings")
    client = get_osvi_client(request)
    try:
        result = await client.inject_context_for_customer(
            request.match_info["customer_id"], agent_uuid, note
        )
    except ClientValidationError as error:
        raise web.HTTPUnprocessableEntity(text=str(error)) from error
    except NotFoundError as error:
        raise web.HTTPNotFound(text="the customer has no active chat with this agent") from error
    except OsviError as error:
        # The caller may resend only when nothing can have been applied.
        detail = {
            "error": type(error).__name__,
            "may_have_been_applied": error.may_have_been_applied,
        }
        return web.json_response(detail, status=502)
    added = {
        "session_id": result.session_id,
        "attempts": result.attempts,
        "possible_duplicate": result.possible_duplicate,
    }
    return web.json_response(added, status=201)


async def report_closed(app: web.Application) -> None:
    """Runs after the cleanup contexts, so after the client was closed."""
    logger.info("OSVI client closed: %s", app[OSVI_CLIENT].closed)


def create_app() -> web.Application:
    """The application: routes, and one OsviClient opened at start-up, closed at cleanup."""
    app = web.Application()
    app.add_routes(routes)
    app.cleanup_ctx.append(osvi_client_context(timeout=10.0))
    app.on_cleanup.append(report_closed)
    return app


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    # Handlers in flight at SIGTERM get 10 s to finish (aiohttp's default is 60).
    web.run_app(create_app(), host="127.0.0.1", port=port, access_log=None, shutdown_timeout=10)
