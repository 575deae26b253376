"""Where a request's time goes: the SDK's own CPU per call, with the network taken out.

Replaces the transport's POST with a stub that answers at once (after one event-loop turn, as
a real answer would), then times `inject_context` and `inject_many` per call. What is left is
validation, encoding, decoding, result and outcome objects, and (for bulk) lanes and flow
control: the part of the cost the SDK adds on top of aiohttp's own.

Usage: python bench/overhead.py [--calls 100000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import osvi_async._aiohttp as transport_module
from osvi_async import OsviClient
from osvi_async._transport import RawResponse

IDS = [str(uuid.UUID(int=n + 1)) for n in range(1000)]
# The answer names the session asked about: the SDK refuses a 200 for another session.
ANSWERS = {
    f"http://127.0.0.1:9/v1/chat/session/{sid}/inject_context": (
        b'{"success":true,"data":{"session_id":"%s",' % sid.encode()
        + b'"context":["Initial context for this chat",'
        + b'"Earlier voice call: customer wants a refund and prefers WhatsApp follow-up."]}}'
    )
    for sid in IDS
}
CONTEXT = "Earlier voice call: customer wants a refund and prefers WhatsApp follow-up."


async def _stub_send(
    self: transport_module.AiohttpTransport,
    method: str,
    url: str,
    body: bytes | None,
    *,
    timeout: float,
) -> RawResponse:
    await asyncio.sleep(0)
    return RawResponse(200, ANSWERS[url], None)


async def single(client: OsviClient, calls: int, concurrency: int) -> None:
    """`concurrency` tasks sharing `calls` inject_context calls."""
    numbers = iter(range(calls))

    async def worker() -> None:
        for n in numbers:
            await client.inject_context(IDS[n % 1000], CONTEXT)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def bulk(client: OsviClient, calls: int, concurrency: int) -> None:
    """One inject_many run over `calls` items."""
    items = ((IDS[n % 1000], CONTEXT) for n in range(calls))
    async with client.inject_many(items, concurrency=concurrency) as run:
        async for _ in run:
            pass


async def measure(calls: int, concurrency: int, repetitions: int) -> dict[str, float]:
    """Median microseconds per call of each path."""
    transport_module.AiohttpTransport.send = _stub_send  # type: ignore[method-assign]
    client = OsviClient("0123456789abcdef", base_url="http://127.0.0.1:9")
    results: dict[str, list[float]] = {"inject_context": [], "inject_many": []}
    for _ in range(repetitions):
        for name, path in (("inject_context", single), ("inject_many", bulk)):
            started = time.process_time()
            await path(client, calls, concurrency)
            results[name].append((time.process_time() - started) / calls * 1e6)
    return {name: statistics.median(values) for name, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    medians = asyncio.run(measure(args.calls, args.concurrency, args.repetitions))
    print(f"SDK CPU per call with the network stubbed out (c={args.concurrency}, medians):")
    for name, micros in medians.items():
        print(f"  {name:15} {micros:6.2f} us")


if __name__ == "__main__":
    main()
