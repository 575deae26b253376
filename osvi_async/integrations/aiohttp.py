"""aiohttp.web: one `OsviClient` per application, opened and closed by its `cleanup_ctx`.

::

    from aiohttp import web
    from osvi_async.integrations.aiohttp import OSVI_CLIENT, osvi_client_context

    async def add_note(request: web.Request) -> web.Response:
        client = request.app[OSVI_CLIENT]
        result = await client.inject_context_for_customer(...)
        return web.json_response({"session_id": result.session_id}, status=201)

    app = web.Application()
    app.cleanup_ctx.append(osvi_client_context(timeout=5.0))

Why a cleanup context: the client holds a connection pool and a session cache, so the whole
application should share one, created inside the running loop and closed after the server
has finished its requests (aiohttp's runner waits for the handlers in flight, up to its
`shutdown_timeout`, before it runs the cleanup).

aiohttp is a dependency of osvi-async already: this needs no extra.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from aiohttp import web

from osvi_async._client import OsviClient
from osvi_async.integrations._options import takes_client_options

__all__ = ["OSVI_CLIENT", "osvi_client_context"]

OSVI_CLIENT: Final = web.AppKey("osvi_client", OsviClient)
"""The application key of the client: `request.app[OSVI_CLIENT]`."""

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


@takes_client_options(OsviClient)
def osvi_client_context(*args: Any, **client_options: Any) -> CleanupContext:
    """A cleanup context that opens one `OsviClient` at start-up and closes it at cleanup.

    Takes `OsviClient`'s arguments (token, `base_url`, `timeout`, `retry`, ...); without a
    token the client reads `OSVI_API_TOKEN` (and `OSVI_BASE_URL`) when the application starts,
    so an invalid configuration stops the start-up with a `ClientValidationError`.

    Append it to `app.cleanup_ctx`; the client is `app[OSVI_CLIENT]` from then on, and stays
    there after cleanup (closed: a late call raises `ClientClosedError`). Cleanup contexts
    unwind in reverse order, so one appended after this one may use the client in its own
    cleanup; an `app.on_cleanup` callback runs after the client is closed.

    Returns:
        An async generator function of the application, as `app.cleanup_ctx` expects.
    """

    async def osvi_client(app: web.Application) -> AsyncIterator[None]:
        async with OsviClient(*args, **client_options) as client:
            app[OSVI_CLIENT] = client
            yield

    return osvi_client
