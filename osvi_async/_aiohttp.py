"""The default HTTP transport, on aiohttp: the only module of the client that touches it.

It owns (or borrows) the `aiohttp.ClientSession`, sends one request per call, reads the answer
with a size cap, and translates every aiohttp failure into an `osvi_async.errors` class, so no
foreign type or exception escapes to the caller (the contract is `_transport.Transport`).
"""

from __future__ import annotations

import asyncio
import io
from typing import Final

import aiohttp
from yarl import URL

from osvi_async._deadline import Deadline, DeadlineWheel
from osvi_async._decode import Scrubber
from osvi_async._retry import raise_if_cancelling
from osvi_async._transport import (
    USER_AGENT,
    PoolState,
    RawResponse,
    closed_client_error,
    closed_while_waiting_error,
    make_safe,
    other_loop_error,
)
from osvi_async.errors import (
    APIConnectionError,
    APITimeoutError,
    ClientClosedError,
    ClientValidationError,
    ResponseDecodeError,
    TLSHandshakeError,
)

_URL_CACHE_SIZE: Final = 65_536
_LARGE_BODY: Final = 2**20
_NO_TIMER_ROUNDING: Final = 1e9


class AiohttpTransport(PoolState):
    """One connection pool and the headers every request carries.

    The `ClientSession` is created lazily, on the first request, so that it binds to the event
    loop that actually runs the calls. A session passed in by the caller is used as is and is
    never closed here.
    """

    __slots__ = (
        "_borrowed",
        "_deadlines",
        "_headers",
        "_loop",
        "_max_response_bytes",
        "_request_headers",
        "_session",
        "_timeouts",
        "_urls",
        "scrubber",
    )

    def __init__(
        self,
        *,
        api_token: str,
        max_connections: int,
        max_response_bytes: int,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise ClientValidationError(
                f"session must be an aiohttp.ClientSession or None, got {type(session).__name__}"
            )
        self._headers: Final = {
            "API-Token": api_token,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        #: Makes server text safe to show: the token redacted, control characters escaped.
        self.scrubber: Final = Scrubber(api_token)
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = session
        self._borrowed = session is not None
        self._loop: asyncio.AbstractEventLoop | None = None  # of the session we created
        # Our own session carries the headers as its defaults; a borrowed one gets them on
        # every request, so that its own defaults still apply.
        self._request_headers = self._headers if self._borrowed else None
        self._closed = False
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._urls: dict[str, URL] = {}
        # One timer per 1/64 s slot for the attempts' deadlines, not one per request.
        self._deadlines: Final = DeadlineWheel()

    @property
    def needs_closing(self) -> bool:
        """True while this transport holds a session it created and has not closed it."""
        return not self._closed and not self._borrowed and self._session is not None

    async def send(
        self, method: str, url: str, body: bytes | None, *, timeout: float
    ) -> RawResponse:
        """Send one request (`body`, if any, is JSON) and read the answer; aiohttp errors
        come out as ours.

        A task being cancelled always ends in `asyncio.CancelledError`, never in a timeout
        error that a retry loop would act on. A call that was waiting for a pooled connection
        when the pool was closed ends in `ClientClosedError` (nothing sent), not in a bare
        `CancelledError` its caller never asked for; one already sent ends in
        `APIConnectionError(request_sent=True)`.
        """
        session = self._session_for_request()
        try:
            # The attempt's whole timeout is ours (Deadline, asyncio.timeout's rules), not
            # aiohttp's `total`: aiohttp enters its total timer twice (request and response
            # start) and uncancels the task once per exit, so a cancel() landing as that timer
            # fires was turned into a TimeoutError and lost. A timeout of a second or more
            # shares its timer with those due in the same 1/64 s (_deadline.DeadlineWheel).
            with Deadline(timeout, self._deadlines):
                async with session.request(
                    method,
                    self._urls.get(url) or self._url(url),
                    # aiohttp warns (ResourceWarning) about a bytes body over 1 MiB, which a
                    # context near max_context_bytes makes: such a body goes as a stream.
                    data=body if body is None or len(body) <= _LARGE_BODY else io.BytesIO(body),
                    headers=self._request_headers,
                    timeout=self._timeouts.get(timeout) or self._timeout(timeout),
                    allow_redirects=False,
                    raise_for_status=False,  # even on a borrowed session: statuses are ours
                ) as response:
                    status = response.status
                    headers = response.headers
                    declared = response.content_length
                    if (
                        declared is not None
                        and declared <= self._max_response_bytes
                        and "Content-Encoding" not in headers
                    ):
                        payload = await response.read()  # exactly `declared` bytes: one read
                    else:
                        payload = await self._read_capped(response)
                    # Only refusals (429, 503) carry a Retry-After worth reading.
                    retry_after = headers.get("Retry-After") if status >= 300 else None
                    return RawResponse(status, payload, retry_after)
        except asyncio.CancelledError as exc:
            # Closing the pool (our close(), or the owner closing a borrowed session) cancels
            # the futures of calls waiting for a pooled connection: a CancelledError for a
            # task nobody cancelled. Such a call had no connection, so nothing was sent.
            # Requests already on the wire see their connection closed instead (an aiohttp
            # ClientError: "sent, no answer"). A real cancellation still propagates.
            task = asyncio.current_task()
            if (task is None or not task.cancelling()) and (self._closed or session.closed):
                raise closed_while_waiting_error() from exc
            raise
        except TimeoutError as exc:
            # aiohttp's own timeout errors are also TimeoutError, so this comes first.
            raise_if_cancelling()
            sent = not isinstance(exc, aiohttp.ConnectionTimeoutError)
            phase = "waiting for the answer" if sent else "waiting for a connection"
            raise APITimeoutError(
                f"Request timed out after {timeout:g} s while {phase}", request_sent=sent
            ) from exc
        except aiohttp.ClientSSLError as exc:
            # Certificate not trusted, or the port does not speak TLS (WRONG_VERSION_NUMBER):
            # the same handshake fails the same way, so this is never retried.
            failure: APIConnectionError = TLSHandshakeError(
                f"TLS handshake with {exc.host}:{exc.port} failed ({exc.os_error}): check that "
                "base_url names an https port and that its certificate is trusted",
                request_sent=False,
            )
            cause: BaseException | None = exc
        except aiohttp.ClientConnectorError as exc:
            failure = APIConnectionError(
                f"Could not connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc}",
                request_sent=False,
            )
            cause = exc
        except aiohttp.ClientResponseError as exc:
            # Its request_info holds the request headers, token included: keep it out of the
            # chain (raising outside the except block leaves no __context__ either).
            failure = APIConnectionError(
                f"Unreadable response after the request was sent: {exc.message}",
                request_sent=True,
            )
            cause = None
        except aiohttp.ClientError as exc:
            failure = APIConnectionError(
                f"Connection failed after the request was sent: {type(exc).__name__}: {exc}",
                request_sent=True,
            )
            cause = exc
        except RuntimeError as exc:
            if session.closed:
                raise ClientClosedError(
                    "The aiohttp session given to OsviClient was closed by its owner"
                ) from exc
            raise
        if not make_safe(failure, self.scrubber) or cause is None:
            raise failure from None
        raise failure from cause

    async def close(self) -> None:
        """Close the session if this transport created it; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        session, self._session = self._session, None
        if session is not None and not self._borrowed:
            await session.close()

    def _session_for_request(self) -> aiohttp.ClientSession:
        if self._closed:
            raise closed_client_error()
        session = self._session
        if session is None:
            self._loop = asyncio.get_running_loop()
            session = self._session = self._new_session()
        elif self._loop is not None and self._loop is not asyncio.get_running_loop():
            raise other_loop_error()
        return session

    def _new_session(self) -> aiohttp.ClientSession:
        # Called from a coroutine, so the session and its connector bind to the running loop.
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            timeout_ceil_threshold=_NO_TIMER_ROUNDING,
        )
        return aiohttp.ClientSession(
            connector=connector,
            # Answers are a few hundred bytes of JSON: asking for compression costs more than
            # it saves. A server that compresses anyway is still decoded (and capped).
            # "identity" rather than skip_auto_headers, which makes aiohttp copy and extend
            # the headers of every request.
            headers={**self._headers, "Accept-Encoding": "identity"},
            cookie_jar=aiohttp.DummyCookieJar(),  # the API sets no cookies worth keeping
            raise_for_status=False,
        )

    def _url(self, url: str) -> URL:
        """The parsed URL, built once per session id: yarl parsing costs more than a lookup."""
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            parsed = self._urls[url] = URL(url, encoded=True)
        return parsed

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            if len(self._timeouts) > 64:  # deadlines make many distinct values; keep it small
                self._timeouts.clear()
            # Getting a connection (pool wait included) must end a little before the whole
            # attempt does, so that a timeout before anything was sent is told apart.
            connect = seconds - min(0.5, seconds * 0.05)
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(
                total=None,  # the whole attempt is bounded by asyncio.timeout in post()
                connect=connect,
                # Exact timers: rounding up to whole seconds would blur connect vs. total.
                ceil_threshold=_NO_TIMER_ROUNDING,
            )
        return timeout

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        """Read a body of unknown or encoded length, refusing more than the cap (after
        decompression, so gzip bombs too); `send` reads a plain body within the cap itself."""
        limit = self._max_response_bytes
        declared = response.content_length
        if declared is not None and declared > limit:
            raise self._too_large(response.status, limit)
        chunks = bytearray()
        stream = response.content
        while True:
            chunk = await stream.read(limit + 1 - len(chunks))
            if not chunk:
                return bytes(chunks)
            chunks += chunk
            if len(chunks) > limit:
                raise self._too_large(response.status, limit)

    @staticmethod
    def _too_large(status: int, limit: int) -> ResponseDecodeError:
        return ResponseDecodeError(
            f"Response body is larger than {limit} bytes (HTTP {status}); refusing to read it. "
            "A real OSVI answer is a few hundred bytes: check base_url",
            status=status,
            body="",
        )
