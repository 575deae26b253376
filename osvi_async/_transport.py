"""The HTTP seam: what the call loop needs from an HTTP stack, and the choice between stacks.

`_call` sends every attempt through a `Transport`: one request, the answer read under a size
cap, every failure already an `osvi_async.errors` class saying whether the request was sent.
Two implementations keep that contract: `_aiohttp.AiohttpTransport` (the default, pure Python
on aiohttp) and `_reqwest.ReqwestTransport` (Rust's reqwest through pyreqwest, the `reqwest`
extra), which spends about a third of aiohttp's CPU per request. Nothing else in the package
imports either HTTP library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, NamedTuple, Protocol, get_args

from osvi_async import __version__
from osvi_async.errors import ClientClosedError, ClientValidationError, OsviError

if TYPE_CHECKING:
    import aiohttp

    from osvi_async._decode import Scrubber
    from osvi_async.errors import APIConnectionError

USER_AGENT: Final = f"osvi-async/{__version__}"

HttpBackend = Literal["aiohttp", "reqwest"]
"""The HTTP stacks an `OsviClient` can send through."""
HTTP_BACKENDS: Final[tuple[str, ...]] = get_args(HttpBackend)


class RawResponse(NamedTuple):
    """What came back for one attempt, before decoding."""

    status: int
    body: bytes
    retry_after: str | None


class Transport(Protocol):
    """One connection pool and the headers every request carries."""

    @property
    def scrubber(self) -> Scrubber:
        """Makes server text safe to show: the token redacted, control characters escaped."""

    @property
    def closed(self) -> bool:
        """True once `close()` ran."""

    @property
    def needs_closing(self) -> bool:
        """True while this transport holds a pool it opened and has not closed it."""

    async def send(
        self, method: str, url: str, body: bytes | None, *, timeout: float
    ) -> RawResponse:
        """Send one request (`body`, if any, is JSON) and read the answer within `timeout`.

        Raises only `osvi_async.errors` classes, or `asyncio.CancelledError` when the task is
        cancelled: `APITimeoutError` / `APIConnectionError` with `request_sent` False only
        when nothing can have reached the server, `ClientClosedError` for a call that was
        waiting for a pooled connection when the pool closed, `ResponseDecodeError` for a
        body over the cap.
        """

    async def close(self) -> None:
        """Close the pool if this transport opened it; safe to call more than once."""


class PoolState:
    """What every transport keeps about its pool: its size, and whether `close()` ran.

    The part the two transports share; each sets both attributes in its `__init__`.
    """

    __slots__ = ("_closed", "_max_connections")

    _closed: bool
    _max_connections: int

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {state} max_connections={self._max_connections}>"

    @property
    def closed(self) -> bool:
        """True once `close()` ran."""
        return self._closed


def open_transport(
    backend: str,
    *,
    api_token: str,
    max_connections: int,
    max_response_bytes: int,
    timeout: float,
    session: aiohttp.ClientSession | None,
) -> Transport:
    """The transport for `backend`; its pool opens lazily, on the first request.

    `timeout` is the client's default seconds per attempt (reqwest sets its connect timeout
    per client from it; aiohttp takes every timeout per request).
    """
    if backend == "aiohttp":
        from osvi_async._aiohttp import AiohttpTransport  # noqa: PLC0415 - one of two stacks

        return AiohttpTransport(
            api_token=api_token,
            max_connections=max_connections,
            max_response_bytes=max_response_bytes,
            session=session,
        )
    if backend == "reqwest":
        if session is not None:
            raise ClientValidationError(
                "session= is an aiohttp ClientSession: it cannot be used with "
                "http_backend='reqwest'"
            )
        try:
            from osvi_async._reqwest import ReqwestTransport  # noqa: PLC0415 - optional extra
        except ImportError as exc:
            raise ClientValidationError(
                "http_backend='reqwest' needs pyreqwest: pip install 'osvi-async[reqwest]'"
            ) from exc
        return ReqwestTransport(
            api_token=api_token,
            max_connections=max_connections,
            max_response_bytes=max_response_bytes,
            timeout=timeout,
        )
    raise ClientValidationError(
        f"http_backend must be one of {', '.join(map(repr, HTTP_BACKENDS))}, got {backend!r}"
    )


def closed_client_error() -> ClientClosedError:
    """The error for any use of a client after close(), from the client or its transport."""
    return ClientClosedError("This OsviClient is closed; create a new one")


def closed_while_waiting_error() -> ClientClosedError:
    """The error of a call that waited for a pooled connection when the client closed."""
    return ClientClosedError(
        "The OsviClient was closed while this call waited for a pooled connection; nothing was sent"
    )


def other_loop_error() -> OsviError:
    """The error for a pool used from an event loop other than the one it was opened in."""
    return OsviError(
        "This OsviClient's connection pool belongs to another event loop (each "
        "asyncio.run() starts a new one); create one client per event loop"
    )


def make_safe(failure: APIConnectionError, scrubber: Scrubber) -> bool:
    """Scrub the message of a failure that quotes the HTTP stack (which may quote what the
    server sent: a status line, a header) in place; False when it held the token, so that
    the exception it came from must not stay its cause."""
    message = failure.message
    safe = scrubber.text(message)
    if safe == message:
        return True
    failure.args = (safe,)
    return scrubber.redact(message) == message
