"""The floor: the least CPU per request that aiohttp's public client API allows.

Sends the SDK's request with nothing on top (URL parsed once, body encoded once, headers set
on the session, the answer read as bytes and not decoded) and compares it with the raw
aiohttp code a user writes (`json=`, `await resp.json()`), against nginx, interleaved.
The gap between the two is all that any aiohttp-based client can save over raw aiohttp.

Usage: python bench/aiohttp_floor.py [--requests 20000] [--concurrency 64] [--repetitions 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp
from nginx import Nginx
from yarl import URL

SESSION = "4718a326-417b-4dda-90d0-21fd65a11cb8"
CONTEXT = "Earlier voice call: customer wants a refund and prefers WhatsApp follow-up."
HEADERS = {"API-Token": "0123456789abcdef", "Content-Type": "application/json"}


async def floor(base_url: str, requests: int, concurrency: int) -> None:
    """The request with nothing on top."""
    url = URL(f"{base_url}/v1/chat/session/{SESSION}/inject_context", encoded=True)
    body = ('{"context":"' + CONTEXT + '"}').encode()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector,
        headers=HEADERS,
        skip_auto_headers=("Accept-Encoding",),
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:
        numbers = iter(range(requests))

        async def worker() -> None:
            for _ in numbers:
                async with session.post(url, data=body) as response:
                    await response.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def raw(base_url: str, requests: int, concurrency: int) -> None:
    """What a user writes by hand."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, headers={"API-Token": HEADERS["API-Token"]}
    ) as session:
        numbers = iter(range(requests))

        async def worker() -> None:
            for _ in numbers:
                url = f"{base_url}/v1/chat/session/{SESSION}/inject_context"
                async with session.post(url, json={"context": CONTEXT}) as response:
                    response.raise_for_status()
                    await response.json()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    cpu: dict[str, list[float]] = {"floor": [], "raw": []}
    with Nginx(cpu=0) as server:
        for runner in (floor, raw):
            asyncio.run(runner(server.base_url, 1000, args.concurrency))  # warm up
        for _ in range(args.repetitions):
            for name, runner in (("floor", floor), ("raw", raw)):
                started = time.process_time()
                asyncio.run(runner(server.base_url, args.requests, args.concurrency))
                cpu[name].append((time.process_time() - started) / args.requests * 1e6)
    floor_us, raw_us = statistics.median(cpu["floor"]), statistics.median(cpu["raw"])
    print(f"c={args.concurrency}, medians of {args.repetitions}, client CPU per request:")
    print(f"  aiohttp floor  {floor_us:6.1f} us")
    print(f"  raw aiohttp    {raw_us:6.1f} us")
    print(f"  best possible aiohttp-based client vs raw: {raw_us / floor_us:.2f}x throughput")


if __name__ == "__main__":
    main()
