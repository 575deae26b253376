"""Run an example as a real server process and load it: shared by the examples' tests.

`ExampleProcess` starts `python -W error ...` from the repository root with the emulator's
token and URL in its environment, reads both its output streams as they come (a pipe nobody
reads would fill and stall the server), and finds the port it announces. `post_notes` is the
load: many clients posting notes back to back until the server refuses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, Literal

import aiohttp
import attrs
import uvicorn
from starlette.types import ASGIApp

from osvi_async.testing import FaultPlan, OsviEmulator

REPOSITORY: Final = Path(__file__).resolve().parents[2]
AGENT: Final = "agent_emulator"
# Bounds a server that never starts or never stops: the tests take seconds, not this.
LIMIT: Final = 60.0
ANSWER_WITHIN: Final = 30.0
"""Seconds a client waits for an answer: longer than the examples' graceful shutdown (10 s),
so a request the server still holds at exit fails with the connection, not the timeout."""
# Each client stops at its first failure; this bounds a server that never stops accepting.
MOST_NOTES_PER_CLIENT: Final = 50
# What a clean shutdown never prints: warnings (all are errors here), tracebacks, leaks.
LEAK_MARKERS: Final = ("Warning", "Traceback", "Unclosed", "Exception ignored")


class ExampleProcess:
    """One example running as a server process; `lines` is everything it printed so far."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = asyncio.Event()
        assert process.stdout is not None
        assert process.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(process.stdout, self.stdout)),
            asyncio.create_task(self._read(process.stderr, self.stderr)),
        ]

    @classmethod
    async def start(
        cls, arguments: Sequence[str], environment: Mapping[str, str]
    ) -> ExampleProcess:
        """Start `python -W error <arguments>` in the repository root with `environment` added
        to a copy of ours (less any OSVI_ variable of ours)."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("OSVI_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-W",
            "error",
            *arguments,
            cwd=REPOSITORY,
            env={**inherited, **environment},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def _read(self, stream: asyncio.StreamReader, into: list[str]) -> None:
        while line := await stream.readline():
            into.append(line.decode(errors="replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    @property
    def output(self) -> str:
        """Both streams so far, stderr first, for assertion messages."""
        return "\n".join(["--- stderr", *self.stderr, "--- stdout", *self.stdout])

    async def wait_for_line(self, pattern: str) -> re.Match[str]:
        """The first line on either stream matching `pattern`, once it is printed.

        Raises:
            AssertionError: The process exited, or `LIMIT` passed, before such a line.
        """
        compiled = re.compile(pattern)
        async with asyncio.timeout(LIMIT):
            while True:
                self._changed.clear()
                for line in (*self.stderr, *self.stdout):
                    if match := compiled.search(line):
                        return match
                if self.process.returncode is not None:
                    raise AssertionError(f"exited before printing {pattern!r}:\n{self.output}")
                await self._changed.wait()

    async def port(self) -> int:
        """The port the server announced it listens on (`http://127.0.0.1:<port>`)."""
        match = await self.wait_for_line(r"http://127\.0\.0\.1:(\d+)")
        return int(match.group(1))

    def terminate(self) -> None:
        """SIGTERM, what a supervisor (systemd, Kubernetes, docker stop) sends to stop it."""
        self.process.send_signal(signal.SIGTERM)

    async def wait(self) -> int:
        """The exit status, once the process has exited and its output is read to the end."""
        async with asyncio.timeout(LIMIT):
            status = await self.process.wait()
            await asyncio.gather(*self._readers)
        return status

    async def kill(self) -> None:
        """Kill it if it still runs (a failed test's clean-up)."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        for reader in self._readers:
            reader.cancel()


@attrs.define
class Load:
    """What the clients saw: notes answered 2xx, notes that failed, and when."""

    accepted: dict[str, str] = attrs.Factory(dict)
    """note -> customer, for every 2xx answer."""
    failed: dict[str, str] = attrs.Factory(dict)
    """note -> customer, for every error status or connection failure."""
    unanswered: set[str] = attrs.Factory(set)
    """Of the failed, the notes with no answer in `ANSWER_WITHIN` seconds: the server may
    have applied them (a handler cut off by a forced stop)."""
    signalled: bool = False
    accepted_after_signal: int = 0
    failed_before_signal: int = 0

    @property
    def sent(self) -> int:
        return len(self.accepted) + len(self.failed)


async def post_notes(
    base_url: str,
    customers: Sequence[str],
    *,
    clients: int,
    signal_after: int,
    send_signal: Callable[[], None],
) -> Load:
    """`clients` concurrent clients post notes back to back, each on a new connection (no
    keep-alive: a request is either handled or refused, never queued behind another), each
    stopping at its first failure; `send_signal` runs once `signal_after` notes were accepted.

    Every note is unique, so each can be looked for in what the emulator applied.
    """
    load = Load()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=ANSWER_WITHIN)

    async def client(http: aiohttp.ClientSession, number: int) -> None:
        for sequence in itertools.count():
            if sequence == MOST_NOTES_PER_CLIENT:
                return
            customer = customers[(number + sequence) % len(customers)]
            note = f"note {number}.{sequence} for {customer}"
            url = f"{base_url}/customers/{customer}/notes"
            try:
                async with http.post(url, json={"agent_uuid": AGENT, "note": note}) as response:
                    await response.read()
                    accepted = 200 <= response.status < 300
            except aiohttp.ClientError:
                accepted = False
            except TimeoutError:
                accepted = False
                load.unanswered.add(note)
            if not accepted:
                load.failed[note] = customer
                load.failed_before_signal += not load.signalled
                return
            load.accepted[note] = customer
            load.accepted_after_signal += load.signalled
            if not load.signalled and len(load.accepted) >= signal_after:
                load.signalled = True
                send_signal()

    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
        asyncio.TaskGroup() as group,
    ):
        for number in range(clients):
            group.create_task(client(http, number))
    return load


CLIENTS: Final = 200
SIGNAL_AFTER: Final = 150
CUSTOMERS: Final = tuple(f"cust-{number:03}" for number in range(20))
INJECT_LATENCY: Final = 0.05
"""Seconds the emulator holds each inject: requests are still in the handlers at SIGTERM."""


async def run_web_example(
    emulator: OsviEmulator, arguments: Sequence[str], environment: Mapping[str, str]
) -> tuple[Load, ExampleProcess, int, int]:
    """Serve an example against `emulator`, load it with `CLIENTS` clients, SIGTERM it after
    `SIGNAL_AFTER` accepted notes, and check what the emulator applied against what the
    clients were told.

    Returns:
        The load, the exited process, its exit status and the port it listened on.
    """
    sessions = {
        customer: emulator.create_session(agent_uuid=AGENT, customer_id=customer)
        for customer in CUSTOMERS
    }
    emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=INJECT_LATENCY)
    server = await ExampleProcess.start(
        arguments,
        {
            **environment,
            "OSVI_API_TOKEN": emulator.api_token,
            "OSVI_BASE_URL": emulator.base_url,
        },
    )
    try:
        port = await server.port()
        load = await post_notes(
            f"http://127.0.0.1:{port}",
            CUSTOMERS,
            clients=CLIENTS,
            signal_after=SIGNAL_AFTER,
            send_signal=server.terminate,
        )
        status = await server.wait()
    finally:
        await server.kill()
    landed = {customer: Counter(emulator.applied(sessions[customer])) for customer in CUSTOMERS}
    doubled = [note for note, customer in load.accepted.items() if landed[customer][note] != 1]
    assert doubled == [], "accepted notes not applied exactly once"
    refused = [note for note in load.failed if note not in load.unanswered]
    half_done = [note for note in refused if any(note in seen for seen in landed.values())]
    assert half_done == [], "notes that failed were applied"
    maybe = sum(landed[load.failed[note]][note] for note in load.unanswered)
    assert maybe <= len(load.unanswered), "an unanswered note was applied twice"
    assert sum(sum(seen.values()) for seen in landed.values()) == len(load.accepted) + maybe
    return load, server, status, port


def assert_clean_shutdown(server: ExampleProcess, *, untracked_port: int | None = None) -> int:
    """Nothing a clean shutdown never prints, and the app's own report of the closed client.

    With `untracked_port`, the ResourceWarnings of server-side connections to that port (and
    of their transports) are taken out first, and counted: see `untracked_connections`.

    Returns:
        How many such warnings were taken out.
    """
    stderr, untracked = untracked_connections(server.stderr, untracked_port)
    leaks = [marker for marker in LEAK_MARKERS if marker in stderr]
    assert leaks == [], server.output
    assert "OSVI client closed: True" in stderr, server.output
    return untracked


_SERVER_SOCKET: Final = re.compile(
    r"^ResourceWarning: unclosed <socket\.socket [^>]*laddr=\('127\.0\.0\.1', (\d+)\)"
)
_TRANSPORT: Final = re.compile(r"^ResourceWarning: unclosed transport <_SelectorSocketTransport ")


def untracked_connections(lines: Sequence[str], port: int | None) -> tuple[str, int]:
    """`lines` without the unraisable-warning blocks about connections accepted on `port`.

    aiohttp's runner on asyncio's default loop (aiohttp 3.14, CPython 3.11), stopped under
    load: asyncio accepts a batch of connections at once and hands each to the server a few
    loop turns later, so a connection the kernel had queued as the site stopped can reach
    aiohttp after it stopped tracking connections; nobody closes it, and the garbage
    collector warns about the socket (local port: the server's) or its transport (no port
    shown). Taken out: those two kinds only. A leaked ClientSession, connector or OsviClient
    warns in other words, and is not taken out.
    """
    if port is None:
        return "\n".join(lines), 0
    kept: list[str] = []
    block: list[str] = []
    taken = 0
    for line in lines:
        if line.startswith("Exception ignored in:"):
            kept.extend(block)
            block = [line]
        elif not block:
            kept.append(line)
        elif line.startswith("ResourceWarning:"):  # the last line of the unraisable's report
            socket_match = _SERVER_SOCKET.match(line)
            if (socket_match is not None and socket_match.group(1) == str(port)) or (
                _TRANSPORT.match(line)
            ):
                taken += 1
            else:
                kept.extend([*block, line])
            block = []
        else:
            block.append(line)
    kept.extend(block)
    return "\n".join(kept), taken


@contextlib.asynccontextmanager
async def serve_in_process(
    app: ASGIApp, *, lifespan: Literal["on", "off"] = "on"
) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn in this event loop, lifespan on unless told; yields its
    base URL.

    Leaving stops it the way SIGTERM does (`should_exit`): requests in flight finish, then the
    lifespan's shutdown runs. uvicorn's logging is left alone (`log_config=None`).
    """
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan=lifespan, log_config=None)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(LIMIT):
            while not server.started:
                if serving.done():
                    raise AssertionError("uvicorn stopped during start-up")
                await asyncio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
