"""FastAPI and Starlette: one `OsviClient` per application, opened and closed by its lifespan.

Install with `pip install 'osvi-async[fastapi]'`::

    from fastapi import FastAPI
    from osvi_async.integrations.fastapi import OsviClientDep, osvi_lifespan

    app = FastAPI(lifespan=osvi_lifespan(timeout=5.0))

    @app.post("/customers/{customer_id}/notes")
    async def add_note(customer_id: str, note: str, client: OsviClientDep) -> dict[str, str]:
        result = await client.inject_context_for_customer(customer_id, "agent_...", note)
        return {"session_id": result.session_id}

Why a lifespan: the client holds a connection pool and a session cache, so the whole
application should share one, created inside the server's event loop and closed after the
server has finished its requests (uvicorn runs the lifespan's shutdown only once every request
in flight has its response). A client per request would open a pool per request; a client made
at import time would belong to no loop.

The lifespan also yields the client as lifespan state (`{"osvi_client": client}`), which the
server copies into every request's `request.state`, mounted applications' requests included:
Starlette never runs a mounted application's own lifespan, and `request.app` is then the
mounted one, whose `app.state` is empty.

Starlette applications use `osvi_lifespan` and `get_osvi_client(request)` the same way; only
`OsviClientDep` is FastAPI's (`Depends`), and this module imports FastAPI for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Final

from fastapi import Depends
from starlette.requests import HTTPConnection

from osvi_async._client import OsviClient
from osvi_async.integrations._options import takes_client_options

__all__ = [
    "STATE_ATTRIBUTE",
    "LifespanNotInstalledError",
    "OsviClientDep",
    "get_osvi_client",
    "osvi_lifespan",
]

STATE_ATTRIBUTE: Final = "osvi_client"
"""The key of the client in the lifespan state (`request.state`) and on `app.state`."""

Lifespan = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any]]]


class LifespanNotInstalledError(RuntimeError):
    """A route asked for the OSVI client, but no `osvi_lifespan` is running for its application.

    Either it never ran (not installed, `TestClient` outside `with`, `uvicorn --lifespan off`)
    or it has ended and closed the client. A mistake in the application's wiring, not a
    failure of the API: no request was sent.
    """


@takes_client_options(OsviClient)
def osvi_lifespan(*args: Any, **client_options: Any) -> Lifespan:
    """A lifespan that opens one `OsviClient` at start-up and closes it at shutdown.

    Takes `OsviClient`'s arguments (token, `base_url`, `timeout`, `retry`, ...); without a
    token the client reads `OSVI_API_TOKEN` (and `OSVI_BASE_URL`) when the application starts,
    so an invalid configuration stops the start-up with a `ClientValidationError`.

    The client is yielded as lifespan state, `{"osvi_client": client}` (the server copies it
    into each request's `request.state`, mounted applications' requests included), and stored
    as `app.state.osvi_client`; `get_osvi_client` looks in that order. It stays on `app.state`
    after shutdown, closed. Pass the result as `FastAPI(lifespan=...)` or
    `Starlette(lifespan=...)`, or enter it inside a lifespan of your own and yield its state
    (merged with yours, if you have any)::

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
            async with osvi_lifespan()(app) as state:  # the client opens first, closes last
                ...  # your own start-up, which may use state["osvi_client"]
                yield {**state, "cache": ...}
                ...  # your own shutdown, while the client is still open

    The client resolves OpenTelemetry when it is built, on entering this lifespan: configure
    OpenTelemetry before, or pass `tracer_provider=` / `meter_provider=`.

    Returns:
        A function of the application that returns an async context manager yielding the
        lifespan state, as Starlette's `lifespan` parameter expects. The server must support
        lifespan state (uvicorn, Hypercorn and Starlette's `TestClient` do).
    """

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Mapping[str, Any]]:
        async with OsviClient(*args, **client_options) as client:
            setattr(app.state, STATE_ATTRIBUTE, client)
            yield {STATE_ATTRIBUTE: client}

    return lifespan


def get_osvi_client(request: HTTPConnection) -> OsviClient:
    """The application's client, for `Depends(get_osvi_client)` (HTTP routes and websockets).

    Looks in the lifespan state (`request.state`, which reaches mounted applications) first,
    then on `request.app.state`; an open client wins over a closed one.

    Raises:
        LifespanNotInstalledError: No lifespan opened a client, or the one that did has ended
            (its client is closed).
    """
    found = [
        client
        for client in (
            getattr(request.state, STATE_ATTRIBUTE, None),
            getattr(request.app.state, STATE_ATTRIBUTE, None),
        )
        if isinstance(client, OsviClient)
    ]
    for client in found:
        if not client.closed:
            return client
    if found:
        raise LifespanNotInstalledError(
            "lifespan not running: the OsviClient of osvi_lifespan is closed, its lifespan has "
            "ended; make requests while it runs (TestClient inside 'with'; not uvicorn "
            "--lifespan off)"
        )
    raise LifespanNotInstalledError(
        "no OsviClient in request.state or app.state: pass lifespan=osvi_lifespan() to the "
        "application (or enter it in your own lifespan and yield its state), and run it with "
        "its lifespan (TestClient inside 'with'; not uvicorn --lifespan off)"
    )


OsviClientDep = Annotated[OsviClient, Depends(get_osvi_client)]
"""A route parameter annotated with this receives the application's client."""
