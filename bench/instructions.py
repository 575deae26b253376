"""The SDK's own cost per call in CPU instructions, which a noisy machine does not blur.

bench/overhead.py times calls with the network stubbed out; its medians move by a microsecond
or more between runs on a busy machine. This runs the same calls under valgrind's callgrind,
which counts instructions (the same count for the same inputs, whatever else runs), twice with
different call counts, and divides the difference by the extra calls: start-up, imports and
warm-up cancel out. The objects made until then are frozen out of the garbage collector
(`gc.freeze`): otherwise a full collection over every imported module lands in one of the
two runs and not the other, and moves the figure by tens of thousands of instructions a call.

Modes:
- `inject_context`, `inject_many`: the SDK with its transport's `send` stubbed out (the SDK's
  own work: validation, encoding, decoding, results, flow control).
- `wire_sdk`, `wire_aiohttp`: the SDK's `inject_context` and bench/clients.py's hand-written
  aiohttp client, both through real aiohttp (sessions, pool, request writer, response parser,
  timers) over an in-process loopback connection that answers each request on the next loop
  turn: no sockets, so the count is deterministic, and the two are compared like for like.

Usage: python bench/instructions.py [--calls 2000] [--extra 4000] [--loop uvloop]
Runs a child process per measurement: python bench/instructions.py --child MODE N
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COLLECTED = re.compile(r"Collected : (\d+)")
BASE_URL = "http://127.0.0.1:9"
CONCURRENCY = 64


def _install_loopback() -> None:
    """Make every aiohttp TCPConnector connect to an in-process server instead of a socket."""
    import aiohttp
    from aiohttp.client_proto import ResponseHandler

    from bench.overhead import ANSWERS as BY_URL

    # bench/overhead.py's canned answers (they name the session asked about), by session id.
    answers = {url.split("/")[-2].encode(): body for url, body in BY_URL.items()}

    request_line = re.compile(rb"POST /v1/chat/session/([^/]+)/inject_context ")
    length = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)

    class LoopbackTransport(asyncio.Transport):
        """Answers each complete inject_context request, as nginx would, on the next turn."""

        def __init__(self, protocol: ResponseHandler) -> None:
            super().__init__()
            self._protocol = protocol
            self._buffer = bytearray()
            self._closing = False
            self._loop = asyncio.get_running_loop()

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return ("127.0.0.1", 9) if name == "peername" else default

        def is_closing(self) -> bool:
            return self._closing

        def close(self) -> None:
            if not self._closing:
                self._closing = True
                self._loop.call_soon(self._protocol.connection_lost, None)

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

        def get_write_buffer_size(self) -> int:
            return 0

        def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
            self.write(b"".join(chunks))

        def write(self, data: bytes | bytearray | memoryview) -> None:
            buffer = self._buffer
            buffer += data
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            found = length.search(buffer, 0, end + 2)
            size = end + 4 + (int(found.group(1)) if found else 0)
            if len(buffer) < size:
                return
            matched = request_line.match(buffer)
            if matched is None:
                raise RuntimeError(f"unexpected request: {bytes(buffer[:200])!r}")
            body = answers[matched.group(1)]
            del buffer[:size]
            answer = (
                b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (len(body), body)
            )
            self._loop.call_soon(self._protocol.data_received, answer)

    async def create_connection(
        self: aiohttp.TCPConnector, req: Any, traces: Any, timeout: Any
    ) -> ResponseHandler:
        protocol = ResponseHandler(asyncio.get_running_loop())
        protocol.connection_made(LoopbackTransport(protocol))
        return protocol

    aiohttp.TCPConnector._create_connection = create_connection  # type: ignore[method-assign]


def _set_up_otel(otel: str) -> None:
    """OpenTelemetry as the run asks: absent (the import blocked, as when not installed),
    imported but with no SDK configured, or an SDK recording to memory (docs/observability.md).
    """
    if otel == "absent":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]
        return
    import opentelemetry.trace

    if otel == "sdk":
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        class Discard(InMemorySpanExporter):
            """Takes spans and keeps none, so memory stays flat over the run."""

            def export(self, spans: Any) -> Any:
                return super().export(())

        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(Discard()))
        opentelemetry.trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def child(mode: str, calls: int, *, stdlib_json: bool, loop: str, otel: str = "as-is") -> None:
    """Make `calls` calls of one path (after 200 to warm up)."""
    if stdlib_json:
        sys.modules["orjson"] = None  # type: ignore[assignment] # as on a default install
    if otel != "as-is":
        _set_up_otel(otel)
    sys.path.insert(0, str(ROOT))
    from bench import overhead

    if mode.startswith("wire_"):
        _install_loopback()
    else:
        import osvi_async._aiohttp as transport_module

        transport_module.AiohttpTransport.send = overhead._stub_send  # type: ignore[method-assign]

    async def sdk(path: Callable[[Any, int, int], Coroutine[Any, Any, None]]) -> None:
        from osvi_async import OsviClient

        async with OsviClient(
            "0123456789abcdef", base_url=BASE_URL, max_connections=CONCURRENCY
        ) as client:
            await path(client, 200, CONCURRENCY)
            gc.freeze()
            await path(client, calls, CONCURRENCY)

    async def raw_aiohttp() -> None:
        from bench.clients import Tally, run_aiohttp

        gc.freeze()  # after the imports; its session and pool are a few objects more
        await run_aiohttp(BASE_URL, overhead.IDS, 200 + calls, CONCURRENCY, Tally())

    runs = {
        "inject_context": lambda: sdk(overhead.single),
        "inject_many": lambda: sdk(overhead.bulk),
        "wire_sdk": lambda: sdk(overhead.single),
        "wire_aiohttp": raw_aiohttp,
    }
    if loop == "uvloop":
        import uvloop

        uvloop.run(runs[mode]())
    else:
        asyncio.run(runs[mode]())


def instructions(mode: str, calls: int, *, stdlib_json: bool, loop: str, otel: str) -> int:
    """Instructions callgrind counted for a child making `calls` calls of `mode`."""
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "callgrind.out")
        result = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--child",
                mode,
                str(calls),
                "--loop",
                loop,
                *(["--stdlib-json"] if stdlib_json else []),
                "--otel",
                otel,
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict and set layouts each run
        )
    found = COLLECTED.search(result.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no total:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--extra", type=int, default=4000)
    parser.add_argument(
        "--stdlib-json",
        action="store_true",
        help="block orjson, as on a default install (the SDK then uses the json module)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop the calls run on (uvloop needs the fast extra)",
    )
    parser.add_argument(
        "--modes",
        default="inject_context,inject_many",
        help="comma-separated: inject_context, inject_many (send stubbed out), "
        "wire_sdk, wire_aiohttp (real aiohttp over an in-process loopback)",
    )
    parser.add_argument(
        "--otel",
        choices=("as-is", "absent", "unconfigured", "sdk"),
        default="as-is",
        help="OpenTelemetry: as installed and untouched, absent (import blocked), imported "
        "with no SDK, or an SDK with in-memory exporters (spans and metrics recorded)",
    )
    parser.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(
            args.child[0],
            int(args.child[1]),
            stdlib_json=args.stdlib_json,
            loop=args.loop,
            otel=args.otel,
        )
        return
    backend = "json (default install)" if args.stdlib_json else "orjson if installed"
    print(
        f"Instructions per call (callgrind, c={CONCURRENCY}, {args.extra} calls, {backend}, "
        f"{args.loop} loop, OpenTelemetry {args.otel}):"
    )
    for mode in args.modes.split(","):
        options = {"stdlib_json": args.stdlib_json, "loop": args.loop, "otel": args.otel}
        low = instructions(mode, args.calls, **options)  # type: ignore[arg-type]
        high = instructions(mode, args.calls + args.extra, **options)  # type: ignore[arg-type]
        print(f"  {mode:15} {(high - low) / args.extra:10,.0f}")


if __name__ == "__main__":
    main()
