"""Hostile servers on 127.0.0.1, written on raw asyncio streams so they can misbehave freely.

`RawServer` runs one `Behaviour` per connection and counts what it saw: connections opened
and still open, request heads read, bytes written. `full_backlog()` gives a port whose
listening socket never accepts and whose queue is full, so a client's connect hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Final

SESSION_ID: Final = "4718a326-417b-4dda-90d0-21fd65a11cb8"
TOKEN: Final = "0123456789abcdef"
CHUNK: Final = b"x" * 65536

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "RawServer"], Awaitable[None]]


class RawServer:
    """A TCP server on 127.0.0.1 that answers each connection with `behaviour`."""

    def __init__(self, behaviour: Behaviour) -> None:
        self._behaviour = behaviour
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[object]] = set()
        self.connections_opened = 0
        self.open_connections = 0
        self.peak_connections = 0
        self.requests = 0
        self.bytes_written = 0
        self.headers_sent = asyncio.Event()

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections_opened += 1
        self.open_connections += 1
        self.peak_connections = max(self.peak_connections, self.open_connections)
        try:
            await self._behaviour(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up: that is what these servers provoke
        finally:
            self.open_connections -= 1
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def read_request(self, reader: asyncio.StreamReader) -> None:
        """Read one HTTP request (head and Content-Length body) and count it."""
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        await reader.readexactly(length)
        self.requests += 1

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Write and wait for the buffer to drain, counting the bytes."""
        writer.write(data)
        await writer.drain()
        self.bytes_written += len(data)


async def wait_for_hangup(reader: asyncio.StreamReader) -> None:
    """Read and discard until the client closes the connection."""
    while await reader.read(65536):
        pass


async def never_answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer
) -> None:
    """Accept, read the request, and never write a byte."""
    await server.read_request(reader)
    await wait_for_hangup(reader)


async def stall_in_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer
) -> None:
    """Send a 200 head announcing 1,000 bytes, send 10 of them, then stall."""
    await server.read_request(reader)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    await server.write(writer, head + b'{"success"')
    server.headers_sent.set()
    await wait_for_hangup(reader)


def answer_after(delay: float, session_id: str = SESSION_ID) -> Behaviour:
    """Answer every request on the connection with inject_context's 200, `delay` s late."""
    body = (
        b'{"success":true,"data":{"session_id":"%s","context":["an entry"]}}' % session_id.encode()
    )
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"

    async def behaviour(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer
    ) -> None:
        while True:
            await server.read_request(reader)
            await asyncio.sleep(delay)
            await server.write(writer, head % len(body) + body)

    return behaviour


def huge_body(framing: str, size: int) -> Behaviour:
    """A 200 answer of `size` bytes, framed by "length", "chunked" or "close"."""

    async def behaviour(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer
    ) -> None:
        await server.read_request(reader)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        if framing == "length":
            head += b"Content-Length: %d\r\n\r\n" % size
        elif framing == "chunked":
            head += b"Transfer-Encoding: chunked\r\n\r\n"
        else:
            head += b"Connection: close\r\n\r\n"
        await server.write(writer, head)
        sent = 0
        while sent < size:
            chunk = CHUNK[: size - sent]
            frame = b"%x\r\n%s\r\n" % (len(chunk), chunk) if framing == "chunked" else chunk
            await server.write(writer, frame)
            sent += len(chunk)
        if framing == "chunked":
            await server.write(writer, b"0\r\n\r\n")

    return behaviour


def compressed(encoding: str, inflated: int) -> bytes:
    """`inflated` zero bytes, compressed with "gzip" or "deflate" (zlib), built in 1 MiB steps."""
    if encoding == "gzip":
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    else:
        compressor = zlib.compressobj(9)
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(inflated >> 20)]
    parts.append(compressor.flush())
    return b"".join(parts)


def bomb(encoding: str, framing: str, payload: bytes) -> Behaviour:
    """A 200 answer whose small body, compressed with `encoding`, inflates enormously."""

    async def behaviour(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer
    ) -> None:
        await server.read_request(reader)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        head += b"Content-Encoding: %s\r\n" % encoding.encode()
        if framing == "chunked":
            head += b"Transfer-Encoding: chunked\r\n\r\n"
            await server.write(writer, head)
            for start in range(0, len(payload), 16384):
                chunk = payload[start : start + 16384]
                await server.write(writer, b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await server.write(writer, b"0\r\n\r\n")
        else:
            head += b"Content-Length: %d\r\n\r\n" % len(payload)
            await server.write(writer, head + payload)
        await wait_for_hangup(reader)

    return behaviour


@contextlib.contextmanager
def full_backlog() -> Iterator[int]:
    """A port on 127.0.0.1 that never accepts, its queue already full: connects hang."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            fillers.append(filler)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
