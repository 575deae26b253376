"""The optional HTTP transport on Rust's reqwest (pyreqwest): the only module that touches it.

It keeps `_aiohttp.AiohttpTransport`'s contract exactly (see `_transport.Transport`): the same
headers, no redirects, no cookies, no proxies from the environment, the same size cap (after
decompression), and every failure translated into an `osvi_async.errors` class with the same
`request_sent` rules. pyreqwest's exception classes do not say on their own whether a request
was sent (its `ConnectTimeoutError` and `ConnectError` also cover "sent, no answer yet"), so the
classification reads the cause chain, and is conservative: "not sent" only when the failure was
in the pool wait or inside reqwest's connect step.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from pyreqwest import exceptions as rq
from pyreqwest.client import ClientBuilder
from pyreqwest.http import HeaderMap

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
    ResponseDecodeError,
    TLSHandshakeError,
)

if TYPE_CHECKING:
    from pyreqwest.client import Client
    from pyreqwest.response import ResponseBodyReader

_READ_BUFFER: Final = 65_536
"""How much reqwest buffers ahead of our reads of one answer (after decompression): pyreqwest's
default, or less when the cap is smaller."""
_TIMEOUT_CACHE_SIZE: Final = 64
# reqwest's own wording for a failure inside its connect step (TCP, TLS, DNS): nothing sent.
_CONNECT_STEP: Final = "client error (Connect)"
_TLS_MARKERS: Final = (
    "certificate",
    "tls",
    "ssl",
    "handshake",
    "received corrupt message",
    "peer is incompatible",
    "received fatal alert",
    "invalidcontenttype",
)


class ReqwestTransport(PoolState):
    """One reqwest client (its own pool) and the headers every request carries.

    The client is built lazily, on the first request, inside the running loop. Calls take a
    slot here, an `asyncio.Semaphore` of `max_connections`, before they reach pyreqwest: a
    call still waiting for a slot when `close()` runs is then known to have sent nothing
    (`ClientClosedError`), which pyreqwest's single "Client was closed" error cannot tell from
    a call on the wire. pyreqwest's own limiter, of the same size, still bounds the requests
    on the wire: a cancelled call frees its slot at once, but pyreqwest 0.15 does not abort
    its request, which is sent and answered in the background (see docs/transports.md).
    """

    __slots__ = (
        "_client",
        "_connect_timeout",
        "_headers",
        "_hosts",
        "_loop",
        "_max_response_bytes",
        "_slots",
        "_timeouts",
        "_waiting",
        "scrubber",
    )

    def __init__(
        self, *, api_token: str, max_connections: int, max_response_bytes: int, timeout: float
    ) -> None:
        headers = HeaderMap()
        headers.insert("API-Token", api_token, is_sensitive=True)
        headers.insert("Content-Type", "application/json")
        headers.insert("Accept", "application/json")
        # Answers are a few hundred bytes: asking for compression costs more than it saves.
        # reqwest adds its own Accept-Encoding unless one is set; "identity" asks for none,
        # and a server that compresses anyway is still decoded (and capped after decoding).
        headers.insert("Accept-Encoding", "identity")
        self._headers: Final = headers
        #: Makes server text safe to show: the token redacted, control characters escaped.
        self.scrubber: Final = Scrubber(api_token)
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        # reqwest's connect timeout is per client, not per request: it is the client's
        # default attempt timeout, a little shorter, so that a hanging connect ends as "not
        # sent" (an attempt given less time than that may end "sent", the safe side).
        self._connect_timeout = timedelta(seconds=timeout - min(0.5, timeout * 0.05))
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._waiting = 0  # calls blocked on a slot, woken by close()
        self._closed = False
        self._timeouts: dict[float, timedelta] = {}
        self._hosts: dict[str, str] = {}

    @property
    def needs_closing(self) -> bool:
        """True while this transport holds a client it built and has not closed it."""
        return not self._closed and self._client is not None

    async def send(
        self, method: str, url: str, body: bytes | None, *, timeout: float
    ) -> RawResponse:
        """Send one request (`body`, if any, is JSON) and read the answer; pyreqwest errors
        come out as ours.

        A task being cancelled always ends in `asyncio.CancelledError`, never in a timeout
        error. A call waiting for a slot when the transport closes ends in `ClientClosedError`
        (nothing sent); one already past it in `APIConnectionError(request_sent=True)`.
        """
        client, slots = self._client_for_request()
        if slots.locked():
            started = time.monotonic()
            await self._wait_for_slot(slots, timeout)
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                slots.release()
                raise APITimeoutError(
                    f"Request timed out after {timeout:g} s while waiting for a connection",
                    request_sent=False,
                )
        else:
            left = timeout
            await slots.acquire()  # free: returns at once
        try:
            return await self._exchange(client, method, url, body, left, timeout)
        finally:
            slots.release()

    async def close(self) -> None:
        """Close the client: calls on the wire fail, calls waiting for a slot send nothing."""
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        slots = self._slots
        if slots is not None:
            for _ in range(self._waiting):  # wake them: each sees `closed` and gives up
                slots.release()
        if client is not None:
            await client.close()

    async def _wait_for_slot(self, slots: asyncio.Semaphore, timeout: float) -> None:
        self._waiting += 1
        try:
            async with asyncio.timeout(timeout):
                await slots.acquire()
        except TimeoutError as exc:
            raise_if_cancelling()
            raise APITimeoutError(
                f"Request timed out after {timeout:g} s while waiting for a connection",
                request_sent=False,
            ) from exc
        finally:
            self._waiting -= 1
        if self._closed:
            slots.release()
            raise closed_while_waiting_error()

    async def _exchange(  # noqa: PLR0917 - private: send's arguments, passed on
        self,
        client: Client,
        method: str,
        url: str,
        body: bytes | None,
        left: float,
        timeout: float,
    ) -> RawResponse:
        """The request itself, within `left` seconds of the attempt's `timeout` (which the
        messages name)."""
        builder = client.request(method, url)
        if body is not None:
            builder = builder.body_bytes(body)
        builder = builder.timeout(self._timeouts.get(left) or self._timedelta(left))
        if self._max_response_bytes < _READ_BUFFER:  # else pyreqwest's default is ours
            builder = builder.streamed_read_buffer_limit(self._max_response_bytes + 1)
        request = builder.build_streamed()
        try:
            async with request as response:
                status = response.status
                limit = self._max_response_bytes
                declared = response.get_header("Content-Length")
                reader = response.body_reader
                if declared is not None and declared.isdigit():
                    # reqwest drops Content-Length when it decompresses: this is the body.
                    if int(declared) > limit:
                        raise self._too_large(status, limit)
                    chunk = await reader.read(limit + 1)
                    payload = b"" if chunk is None else bytes(chunk)
                else:
                    payload = await self._read_capped(reader, status, limit)
                # Only refusals (429, 503) carry a Retry-After worth reading.
                retry_after = response.get_header("Retry-After") if status >= 300 else None
                return RawResponse(status, payload, retry_after)
        except asyncio.CancelledError as exc:
            # pyreqwest cancels the awaits of a client being closed; nobody cancelled us.
            task = asyncio.current_task()
            if (task is None or not task.cancelling()) and self._closed:
                raise self._closed_in_flight() from exc
            raise
        except rq.PyreqwestError as exc:
            raise_if_cancelling()
            failure, keep_cause = self._translate(exc, url, timeout)
        except RuntimeError as exc:  # pyreqwest's "closed" states outside its error tree
            if not self._closed:
                raise
            failure, keep_cause = self._closed_in_flight(), True
            failure.__cause__ = exc
        if not make_safe(failure, self.scrubber) or not keep_cause:
            raise failure from None
        raise failure from failure.__cause__

    def _translate(
        self, exc: rq.PyreqwestError, url: str, timeout: float
    ) -> tuple[APIConnectionError, bool]:
        """Our error for pyreqwest's `exc`, and whether `exc` may stay its cause."""
        causes = _causes(exc)
        connect_step = _CONNECT_STEP in causes
        failure: APIConnectionError
        if isinstance(exc, rq.ClientClosedError):
            failure = self._closed_in_flight()
        elif isinstance(exc, rq.RequestTimeoutError):
            # A PoolTimeoutError cannot happen (the slots are ours), and reqwest's whole
            # request timer firing mid-connect leaves no trace of the phase: "sent" then.
            sent = not connect_step
            phase = "waiting for the answer" if sent else "waiting for a connection"
            failure = APITimeoutError(
                f"Request timed out after {timeout:g} s while {phase}", request_sent=sent
            )
        elif connect_step and _is_tls(causes):
            failure = TLSHandshakeError(
                f"TLS handshake with {self._host(url)} failed ({_last_cause(exc)}): check "
                "that base_url names an https port and that its certificate is trusted",
                request_sent=False,
            )
        elif connect_step:
            failure = APIConnectionError(
                f"Could not connect to {self._host(url)}: {_last_cause(exc)}",
                request_sent=False,
            )
        elif isinstance(exc, rq.BuilderError):
            failure = APIConnectionError(
                f"The request could not be built, nothing was sent: {_last_cause(exc)}",
                request_sent=False,
            )
        elif isinstance(exc, rq.DecodeError):
            failure = APIConnectionError(
                f"Unreadable response after the request was sent: {_last_cause(exc)}",
                request_sent=True,
            )
        else:
            failure = APIConnectionError(
                "Connection failed after the request was sent: "
                f"{type(exc).__name__}: {_last_cause(exc)}",
                request_sent=True,
            )
        failure.__cause__ = exc
        # Its text lists the cause chain, URL included: keep it only if the token is not there.
        text = str(exc)
        return failure, self.scrubber.redact(text) == text

    @staticmethod
    def _closed_in_flight() -> APIConnectionError:
        return APIConnectionError(
            "The OsviClient was closed while this request was in flight; it may have "
            "reached the server",
            request_sent=True,
        )

    def _client_for_request(self) -> tuple[Client, asyncio.Semaphore]:
        if self._closed:
            raise closed_client_error()
        client, slots = self._client, self._slots
        if client is None or slots is None:
            self._loop = asyncio.get_running_loop()
            client = self._client = self._new_client()
            slots = self._slots = asyncio.Semaphore(self._max_connections)
            _settle_at_exit()
        elif self._loop is not asyncio.get_running_loop():
            raise other_loop_error()
        return client, slots

    def _new_client(self) -> Client:
        return (
            ClientBuilder()
            .default_headers(self._headers)
            .user_agent(USER_AGENT)
            .follow_redirects(False)  # a 3xx comes back as a status, as with aiohttp
            .default_cookie_store(False)  # the API sets no cookies worth keeping
            .referer(False)
            .no_proxy()  # like aiohttp's default trust_env=False: no proxy from the env
            .error_for_status(False)
            # Our slots bound the calls; reqwest's own limiter bounds the requests: pyreqwest
            # does not abort a request whose awaiting task was cancelled (it is still sent
            # and answered), and holds its permit until then, while our slot is free at once.
            .max_connections(self._max_connections)
            .connect_timeout(self._connect_timeout)
            .build()
        )

    def _timedelta(self, seconds: float) -> timedelta:
        value = self._timeouts.get(seconds)
        if value is None:
            if len(self._timeouts) >= _TIMEOUT_CACHE_SIZE:
                self._timeouts.clear()
            value = self._timeouts[seconds] = timedelta(seconds=seconds)
        return value

    def _host(self, url: str) -> str:
        host = self._hosts.get(url)
        if host is None:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            host = f"{parts.hostname}:{port}"
            if len(self._hosts) < _TIMEOUT_CACHE_SIZE:
                self._hosts[url] = host
        return host

    async def _read_capped(self, reader: ResponseBodyReader, status: int, limit: int) -> bytes:
        """Read an undeclared (chunked, closed or decompressed) body, refusing the cap."""
        chunks = bytearray()
        while True:
            chunk = await reader.read_chunk()
            if chunk is None:
                return bytes(chunks)
            chunks += chunk
            if len(chunks) > limit:
                raise self._too_large(status, limit)

    @staticmethod
    def _too_large(status: int, limit: int) -> ResponseDecodeError:
        return ResponseDecodeError(
            f"Response body is larger than {limit} bytes (HTTP {status}); refusing to read it. "
            "A real OSVI answer is a few hundred bytes: check base_url",
            status=status,
            body="",
        )


def _causes(exc: rq.PyreqwestError) -> list[str]:
    details = getattr(exc, "details", None)
    found = details.get("causes") if isinstance(details, dict) else None
    return [cause["message"] for cause in found or ()]


def _last_cause(exc: rq.PyreqwestError) -> str:
    causes = _causes(exc)
    return causes[-1] if causes else exc.message


def _is_tls(causes: list[str]) -> bool:
    text = " ".join(causes).lower()
    return any(marker in text for marker in _TLS_MARKERS)


# --- Exit without SIGABRT --------------------------------------------------------------------
# pyreqwest's runtime thread takes the GIL again for a moment after each request completes
# (after the awaiting task has already resumed). If the interpreter is finalizing by then,
# CPython makes that thread exit while it holds a GIL guard, and the guard's release aborts
# the process ("PyGILState_Release: thread state ... must be current when releasing"). It
# happened in 10-45% of processes that exited right after their last request, closed client
# or not. Before finalization starts (atexit runs first), we let those threads go idle.

_SETTLE_LIMIT: Final = 0.5
_settle_registered = False


def _settle_at_exit() -> None:
    global _settle_registered  # noqa: PLW0603 - one hook per process
    if not _settle_registered:
        _settle_registered = True
        atexit.register(_let_runtime_threads_settle)


def _let_runtime_threads_settle() -> None:
    """Wait (GIL released) until pyreqwest's threads are asleep and stay asleep."""
    if not sys.platform.startswith("linux"):
        time.sleep(0.05)
        return
    deadline = time.monotonic() + _SETTLE_LIMIT
    previous: dict[str, tuple[str, ...]] | None = None
    while time.monotonic() < deadline:
        time.sleep(0.001)
        current = _runtime_thread_states()
        if current == previous and all(state[0].startswith("S") for state in current.values()):
            return
        previous = current


def _runtime_thread_states() -> dict[str, tuple[str, ...]]:
    """State and context-switch counts of this process's pyreqwest threads."""
    states: dict[str, tuple[str, ...]] = {}
    for tid in os.listdir("/proc/self/task"):
        base = f"/proc/self/task/{tid}/"
        try:
            with open(base + "comm", encoding="ascii", errors="replace") as comm:
                if not comm.read().startswith("pyreqwest"):
                    continue
            with open(base + "status", encoding="ascii", errors="replace") as status:
                lines = status.read().splitlines()
        except OSError:
            continue  # the thread ended meanwhile
        wanted = ("State:", "voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")
        values = [line.split(":", 1)[1].strip() for line in lines if line.startswith(wanted)]
        states[tid] = tuple(values)
    return states
