"""ReqwestTransport keeps AiohttpTransport's contract, checked on real sockets on 127.0.0.1.

pyreqwest cannot be mocked by aioresponses, so every test talks to a raw asyncio server
(tests.chaos._servers) that misbehaves on purpose, and asserts what it saw.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import struct
import sys
import textwrap
import traceback
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from osvi_async import (
    APIConnectionError,
    APITimeoutError,
    ClientClosedError,
    OsviClient,
    ResponseDecodeError,
    RetryPolicy,
)
from osvi_async._reqwest import ReqwestTransport
from osvi_async._transport import USER_AGENT
from tests.chaos._servers import (
    Behaviour,
    RawServer,
    answer_after,
    bomb,
    compressed,
    full_backlog,
    huge_body,
    never_answer,
    stall_in_body,
    wait_for_hangup,
)
from tests.support import SESSION_ID, exception_chain, inject_server

TOKEN = "Sup3rS3cretT0ken"
BODY = b'{"success": true}'
CAP = 64 * 1024
MIB = 1024 * 1024
INFLATED = 64 * MIB


def transport(max_connections: int = 4, timeout: float = 5.0) -> ReqwestTransport:
    """A transport with a 64 KiB cap, made for clients whose attempts take `timeout`."""
    return ReqwestTransport(
        api_token=TOKEN, max_connections=max_connections, max_response_bytes=CAP, timeout=timeout
    )


@pytest.fixture
async def reqwest() -> AsyncIterator[ReqwestTransport]:
    """A transport closed after the test."""
    opened = transport()
    yield opened
    await opened.close()


def answer(raw: bytes, heads: list[bytes] | None = None) -> Behaviour:
    """A behaviour that reads one request (keeping its head in `heads`) and writes `raw`."""

    async def behaviour(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if heads is not None:
            heads.append(head)
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        server.requests += 1
        await server.write(writer, raw)
        await wait_for_hangup(reader)

    return behaviour


def ok(body: bytes = BODY, extra: bytes = b"") -> bytes:
    """A 200 with a Content-Length."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def drop_after_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer
) -> None:
    """Read the request, then hang up without a byte."""
    await server.read_request(reader)


async def request_seen(server: RawServer) -> None:
    """Return once the server has read a request."""
    for _ in range(500):
        if server.requests:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no request arrived")


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def zstd_bomb(inflated: int) -> bytes:
    """A zstd frame of RLE blocks: 4 bytes per 128 KiB of zeros (no zstd library needed)."""
    block = 128 * 1024
    frame = bytearray(b"\x28\xb5\x2f\xfd\x00\x38")  # magic; no size, no checksum; 128 KiB window
    count = inflated // block
    for index in range(count):
        last = 1 if index == count - 1 else 0
        frame += struct.pack("<I", last | (1 << 1) | (block << 3))[:3] + b"\x00"
    return bytes(frame)


def peak_rss_reset() -> int:
    """Reset this process's peak RSS and return the current RSS, in bytes."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")
    return _status_kib("VmRSS") * 1024


def peak_rss() -> int:
    """This process's peak RSS since the last reset, in bytes."""
    return _status_kib("VmHWM") * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


async def test_headers_are_the_aiohttp_ones(reqwest: ReqwestTransport) -> None:
    """Token, JSON types, our User-Agent, no compression asked for, no cookie: one request."""
    heads: list[bytes] = []
    async with RawServer(answer(ok(), heads)) as server:
        response = await reqwest.send("POST", server.base_url + "/x", b"{}", timeout=5.0)
    assert (response.status, response.body, response.retry_after) == (200, BODY, None)
    [head] = heads
    lines = {
        name.lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
        if value
    }
    assert lines[b"api-token"] == TOKEN.encode()
    assert lines[b"content-type"] == lines[b"accept"] == b"application/json"
    assert lines[b"user-agent"] == USER_AGENT.encode()
    assert lines[b"accept-encoding"] == b"identity"
    assert b"cookie" not in lines
    assert head.startswith(b"POST /x HTTP/1.1\r\n")


async def test_redirects_come_back_as_statuses(reqwest: ReqwestTransport) -> None:
    """A 307 is returned as is, with its Retry-After; its Location is never requested."""
    raw = b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\nRetry-After: 3\r\n"
    raw += b"Content-Length: 0\r\n\r\n"
    async with RawServer(answer(raw)) as server:
        response = await reqwest.send("POST", server.base_url, b"{}", timeout=5.0)
        assert server.requests == 1
    assert (response.status, response.body, response.retry_after) == (307, b"", "3")


async def test_a_compressed_answer_is_decoded_anyway(reqwest: ReqwestTransport) -> None:
    """A server that gzips without being asked: the caller gets the plain body."""
    packed = gzip.compress(BODY)
    raw = ok(packed, b"Content-Encoding: gzip\r\n")
    async with RawServer(answer(raw)) as server:
        response = await reqwest.send("POST", server.base_url, b"{}", timeout=5.0)
    assert response.body == BODY


async def test_refused_connection_was_not_sent(reqwest: ReqwestTransport) -> None:
    """Nothing listening: APIConnectionError(request_sent=False), naming host and port."""
    port = closed_port()
    with pytest.raises(APIConnectionError) as caught:
        await reqwest.send("POST", f"http://127.0.0.1:{port}/x", b"{}", timeout=5.0)
    assert caught.value.request_sent is False
    assert f"Could not connect to 127.0.0.1:{port}" in str(caught.value)


async def test_hanging_connect_times_out_unsent() -> None:
    """A connect that never completes: APITimeoutError(request_sent=False), its connect
    timeout taken from the client's timeout, not from whichever attempt came first."""
    short = transport(timeout=0.3)
    try:
        with full_backlog() as port, pytest.raises(APITimeoutError) as caught:
            await short.send("POST", f"http://127.0.0.1:{port}/x", b"{}", timeout=0.3)
    finally:
        await short.close()
    assert caught.value.request_sent is False
    assert "waiting for a connection" in str(caught.value)


async def test_silent_server_times_out_sent(reqwest: ReqwestTransport) -> None:
    """Read and never answered: APITimeoutError(request_sent=True), the server saw it."""
    async with RawServer(never_answer) as server:
        with pytest.raises(APITimeoutError) as caught:
            await reqwest.send("POST", server.base_url, b"{}", timeout=0.3)
        assert server.requests == 1
    assert caught.value.request_sent is True


async def test_stall_in_the_body_times_out_sent(reqwest: ReqwestTransport) -> None:
    """A body that stops halfway: APITimeoutError(request_sent=True)."""
    async with RawServer(stall_in_body) as server:
        with pytest.raises(APITimeoutError) as caught:
            await reqwest.send("POST", server.base_url, b"{}", timeout=0.3)
        assert server.requests == 1
    assert caught.value.request_sent is True


async def test_hang_up_after_the_request_was_sent(reqwest: ReqwestTransport) -> None:
    """A connection closed after the request was read: APIConnectionError(request_sent=True)."""
    async with RawServer(drop_after_request) as server:
        with pytest.raises(APIConnectionError) as caught:
            await reqwest.send("POST", server.base_url, b"{}", timeout=5.0)
        assert server.requests == 1
    assert caught.value.request_sent is True
    assert not isinstance(caught.value, APITimeoutError)


async def test_pool_wait_timeout_was_not_sent() -> None:
    """max_connections=1, the slot held: the second call times out unsent, never reaching it."""
    one = transport(max_connections=1)
    async with RawServer(never_answer) as server:
        holder = asyncio.create_task(one.send("POST", server.base_url, b"{}", timeout=5.0))
        await request_seen(server)
        with pytest.raises(APITimeoutError) as caught:
            await one.send("POST", server.base_url, b"{}", timeout=0.2)
        assert caught.value.request_sent is False
        assert server.connections_opened == 1
        await one.close()
        with pytest.raises(APIConnectionError):
            await holder


async def test_close_fails_waiting_and_in_flight_calls_apart() -> None:
    """close(): the call on the wire is 'sent', the one waiting for a slot is never sent."""
    one = transport(max_connections=1)
    async with RawServer(never_answer) as server:
        in_flight = asyncio.create_task(one.send("POST", server.base_url, b"{}", timeout=5.0))
        await request_seen(server)
        waiting = asyncio.create_task(one.send("POST", server.base_url, b"{}", timeout=5.0))
        await asyncio.sleep(0.05)
        opened = one.needs_closing
        await one.close()
        results = await asyncio.gather(in_flight, waiting, return_exceptions=True)
        await asyncio.sleep(0.05)
        assert (server.requests, server.connections_opened) == (1, 1)
        url = server.base_url
    assert isinstance(results[0], APIConnectionError)
    assert results[0].request_sent is True
    assert isinstance(results[1], ClientClosedError)
    assert (opened, one.needs_closing) == (True, False)
    with pytest.raises(ClientClosedError):
        await one.send("POST", url, b"{}", timeout=5.0)


async def test_cancel_in_flight_ends_in_cancelled_error(reqwest: ReqwestTransport) -> None:
    """Cancelling the awaiting task: CancelledError, not a connection or timeout error."""
    async with RawServer(never_answer) as server:
        task = asyncio.create_task(reqwest.send("POST", server.base_url, b"{}", timeout=5.0))
        await request_seen(server)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_cancelled_requests_still_count_against_max_connections() -> None:
    """pyreqwest 0.15 does not abort the request of a cancelled call: it is sent anyway and
    holds its connection until answered. Calls cancelled three at a time, five times over,
    never put more than max_connections requests on the wire, and the client still works."""
    slow = RawServer(answer_after(0.3))
    async with slow as server:
        client = OsviClient(
            TOKEN,
            base_url=server.base_url,
            max_connections=3,
            retry=RetryPolicy.none(),
            http_backend="reqwest",
        )
        async with client:
            for _ in range(5):
                calls = [
                    asyncio.create_task(client.inject_context(SESSION_ID, "cancelled"))
                    for _ in range(3)
                ]
                await asyncio.sleep(0.05)
                for call in calls:
                    call.cancel()
                outcomes = await asyncio.gather(*calls, return_exceptions=True)
                assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
            result = await client.inject_context(SESSION_ID, "after the cancels")
    assert result.session_id == SESSION_ID
    assert server.peak_connections <= 3
    assert server.requests == 16  # every cancelled request reached the server, and the last


async def test_cancel_landing_as_the_timer_fires_stays_a_cancel() -> None:
    """The chaos race on this backend: one request per call, every call CancelledError."""
    timeout = 0.1
    policy = RetryPolicy(initial_delay=0.05, max_delay=0.05, random=lambda: 1.0)
    outcomes: list[str] = []
    async with (
        RawServer(never_answer) as server,
        OsviClient(
            TOKEN, base_url=server.base_url, timeout=timeout, retry=policy, http_backend="reqwest"
        ) as client,
    ):
        loop = asyncio.get_running_loop()
        for trial in range(12):
            task = asyncio.create_task(client.inject_context(SESSION_ID, "x"))
            await asyncio.sleep(0)
            offset = (trial % 6 - 4) * 0.001  # from 4 ms before the timer to 1 ms after

            def busy_then_cancel(task: asyncio.Task[object] = task) -> None:
                end = loop.time() + 0.004
                while loop.time() < end:
                    pass
                task.cancel()

            loop.call_at(loop.time() + timeout + offset, busy_then_cancel)
            try:
                await task
                outcomes.append("returned")
            except asyncio.CancelledError:
                outcomes.append("CancelledError")
            except Exception as exc:
                outcomes.append(type(exc).__name__)
        await asyncio.sleep(0.1)
        assert server.requests == 12
    assert outcomes == ["CancelledError"] * 12


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_oversized_body_is_refused(reqwest: ReqwestTransport, framing: str) -> None:
    """A 16 MiB answer past the 64 KiB cap: the cap's ResponseDecodeError, not all of it read."""
    async with RawServer(huge_body(framing, 16 * MIB)) as server:
        with pytest.raises(ResponseDecodeError) as caught:
            await reqwest.send("POST", server.base_url, b"{}", timeout=10.0)
        assert server.bytes_written < 16 * MIB
    assert str(caught.value).startswith(f"Response body is larger than {CAP} bytes (HTTP 200)")


@pytest.mark.parametrize(
    ("encoding", "payload"),
    [
        ("gzip", compressed("gzip", INFLATED)),
        ("deflate", compressed("deflate", INFLATED)),
        ("zstd", zstd_bomb(INFLATED)),
    ],
)
async def test_compression_bombs_are_capped_after_decoding(
    reqwest: ReqwestTransport, encoding: str, payload: bytes
) -> None:
    """A small body inflating to 64 MiB: refused at the cap; peak RSS grows far less."""
    assert len(payload) < INFLATED // 200
    async with RawServer(bomb(encoding, "chunked", payload)) as server:
        baseline = peak_rss_reset()
        with pytest.raises(ResponseDecodeError) as caught:
            await reqwest.send("POST", server.base_url, b"{}", timeout=10.0)
        growth = peak_rss() - baseline
    assert "larger than" in str(caught.value)
    assert growth < 16 * MIB, growth


async def test_token_echoed_by_a_broken_server_never_shows(reqwest: ReqwestTransport) -> None:
    """A malformed answer quoting the token: not in the error, its repr or its chain."""
    raw = b"HTTP/1.1 200 OK\r\nX-Echo: " + TOKEN.encode() + b"\x01\r\nContent-Length: x\r\n\r\n"
    async with RawServer(answer(raw)) as server:
        with pytest.raises(APIConnectionError) as caught:
            await reqwest.send("POST", server.base_url + "/" + TOKEN, b"{}", timeout=5.0)
    assert caught.value.request_sent is True
    for link in exception_chain(caught.value):
        assert TOKEN not in str(link)
        assert TOKEN not in repr(link)
    assert TOKEN not in "".join(traceback.format_exception(caught.value))
    assert TOKEN not in repr(reqwest)


EXIT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from osvi_async import OsviClient

    async def main():
        async with OsviClient(
            "0123456789abcdef", base_url=sys.argv[1], http_backend="reqwest"
        ) as client:
            await asyncio.gather(
                *(client.inject_context(sys.argv[2], f"e{i}") for i in range(int(sys.argv[3])))
            )

    asyncio.run(main())
    """
)


async def test_processes_exit_cleanly_right_after_their_last_request() -> None:
    """12 processes that exit as soon as their requests end: exit code 0, no Fatal error.

    Unprotected, pyreqwest's runtime thread aborted 10-45% of such exits (SIGABRT).
    """

    async def handler(_request: web.Request) -> web.Response:
        return web.json_response(
            {"success": True, "data": {"session_id": SESSION_ID, "context": ["x"]}}
        )

    async with inject_server(handler) as base_url:

        async def one(requests: int) -> tuple[int | None, bytes]:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                EXIT_SCRIPT,
                base_url,
                SESSION_ID,
                str(requests),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, stderr = await process.communicate()
            return process.returncode, stderr

        outcomes: list[tuple[int | None, bytes]] = []
        for _ in range(3):
            outcomes += await asyncio.gather(*(one(n) for n in (1, 20, 100, 200)))
    assert [code for code, _ in outcomes] == [0] * 12, outcomes
    assert not any(b"Fatal Python error" in stderr for _, stderr in outcomes)


def test_pyreqwest_buffers_no_more_than_we_assume() -> None:
    """The transport leaves pyreqwest's read-ahead at its default when the cap is larger:
    that default must stay the 64 KiB it counts on, or an answer could hold more."""
    from pyreqwest.request import RequestBuilder

    from osvi_async._reqwest import _READ_BUFFER

    assert RequestBuilder.default_streamed_read_buffer_limit() == _READ_BUFFER
