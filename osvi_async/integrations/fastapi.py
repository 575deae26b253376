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

Starlette applications use `osvi_lifespan` and `get_osvi_client(request)` the same way; only
`OsviClientDep` is FastAPI's (`Depends`), and this module imports FastAPI for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
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
"""The `app.state` attribute the lifespan stores the client in."""

Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]


class LifespanNotInstalledError(RuntimeError):
    """A route asked for the OSVI client, but `osvi_lifespan` never ran for its application.

    A mistake in the application's wiring, not a failure of the API: no request was sent.
    """


@takes_client_options(OsviClient)
def osvi_lifespan(*args: Any, **client_options: Any) -> Lifespan:
    """A lifespan that opens one `OsviClient` at start-up and closes it at shutdown.

    Takes `OsviClient`'s arguments (token, `base_url`, `timeout`, `retry`, ...); without a
    token the client reads `OSVI_API_TOKEN` (and `OSVI_BASE_URL`) when the application starts,
    so an invalid configuration stops the start-up with a `ClientValidationError`.

    The client is stored as `app.state.osvi_client`, where `get_osvi_client` finds it, and
    stays there after shutdown (closed: a late call raises `ClientClosedError`). Pass the
    result as `FastAPI(lifespan=...)` or `Starlette(lifespan=...)`, or enter it inside a
    lifespan of your own to compose the two::

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with osvi_lifespan()(app):  # the client opens first, closes last
                ...  # your own start-up, which may use app.state.osvi_client
                yield
                ...  # your own shutdown, while the client is still open

    Returns:
        A function of the application that returns an async context manager, as Starlette's
        `lifespan` parameter expects.
    """

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with OsviClient(*args, **client_options) as client:
            setattr(app.state, STATE_ATTRIBUTE, client)
            yield

    return lifespan


def get_osvi_client(request: HTTPConnection) -> OsviClient:
    """The application's client, for `Depends(get_osvi_client)` (HTTP routes and websockets).

    Raises:
        LifespanNotInstalledError: The application's lifespan did not open a client.
    """
    client = getattr(request.app.state, STATE_ATTRIBUTE, None)
    if not isinstance(client, OsviClient):
        raise LifespanNotInstalledError(
            "no OsviClient on app.state: pass lifespan=osvi_lifespan() to the application "
            "(or enter it in your own lifespan), and run it with its lifespan "
            "(TestClient inside 'with'; not uvicorn --lifespan off)"
        )
    return client


OsviClientDep = Annotated[OsviClient, Depends(get_osvi_client)]
"""A route parameter annotated with this receives the application's client."""
