"""aiohttp.web: one `OsviClient` per application, opened and closed by its `cleanup_ctx`.

::

    from aiohttp import web
    from osvi_async.integrations.aiohttp import get_osvi_client, osvi_client_context

    async def add_note(request: web.Request) -> web.Response:
        client = get_osvi_client(request)
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

__all__ = [
    "OSVI_CLIENT",
    "CleanupContextNotInstalledError",
    "get_osvi_client",
    "osvi_client_context",
]

OSVI_CLIENT: Final = web.AppKey("osvi_client", OsviClient)
"""The application key of the client: `request.config_dict[OSVI_CLIENT]` (which also finds it
from a sub-application's handlers), or `app[OSVI_CLIENT]` on the application that has the
cleanup context."""


class CleanupContextNotInstalledError(RuntimeError):
    """A handler asked for the OSVI client, but no `osvi_client_context` is running for its
    application or any application it was added to.

    A mistake in the application's wiring, not a failure of the API: no request was sent.
    """


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


def get_osvi_client(request: web.Request) -> OsviClient:
    """The client `osvi_client_context` opened, for a handler of its application or of a
    sub-application added to it with `add_subapp` (looked up in `request.config_dict`).

    Raises:
        CleanupContextNotInstalledError: No application of this request has the cleanup
            context, or its cleanup has run (the client is closed).
    """
    client = request.config_dict.get(OSVI_CLIENT)
    if client is None:
        raise CleanupContextNotInstalledError(
            "no OsviClient in the application: append osvi_client_context() to "
            "app.cleanup_ctx (of this application, or of the one it was added to as a sub-app)"
        )
    if client.closed:
        raise CleanupContextNotInstalledError(
            "the OsviClient of osvi_client_context is closed: the application's cleanup has run"
        )
    return client
