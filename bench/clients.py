"""The clients a benchmark compares; each runs up to N inject_context calls at concurrency C.

Every client does the same work: POST `{"context": ...}` with the API-Token header to
`/v1/chat/session/{id}/inject_context` for ids taken round-robin from a pool (bench/harness.py
gives a pool of one), check the status, decode the JSON answer and check it is a success for
that session (the SDK checks that itself). Each `run_*` takes `(base_url, session_ids, count,
concurrency, tally)`, counts every completed call in `tally.done`, and returns when `count`
calls are done (never, when `count` is None: bench/run_client.py cancels it after its time
window).
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import os
import pkgutil
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Final

TOKEN: Final = "bench-token-0001"  # the API's tokens are 16 characters
SYNTHETIC_SESSION_IDS: Final = [str(uuid.UUID(int=n + 1)) for n in range(1000)]
CONTEXT: Final = "Earlier voice call: customer wants a refund and prefers WhatsApp follow-up."
GENERATED_ENV: Final = "OSVI_BENCH_GENERATED"
"""Where the generated client lives: a directory holding the package `GENERATED_PACKAGE`."""
GENERATED_PACKAGE: Final = "osvi_generated_client"
TIMEOUT_SECONDS: Final = 30.0
"""Every client's timeout per request: the SDK's default (httpx's own 5 s connect timeout
fails at c=512 against the emulator while its event loop is busy)."""


def check_answer(body: Any, session_id: str) -> None:
    """Fail unless `body` is a success naming `session_id`: what the SDK checks on every answer."""
    if body["success"] is not True or body["data"]["session_id"] != session_id:
        raise RuntimeError(f"unexpected answer for session {session_id}: {body!r}")


class Tally:
    """Calls completed so far; readable after the run is cancelled."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = 0


Runner = Callable[[str, Sequence[str], int | None, int, Tally], Awaitable[None]]


def _numbers(count: int | None) -> Iterator[int]:
    return iter(range(count)) if count is not None else itertools.count()


async def _spread(
    count: int | None, concurrency: int, tally: Tally, call: Callable[[int], Awaitable[None]]
) -> None:
    """`concurrency` workers share `count` calls, each doing its next call when one ends."""
    numbers = _numbers(count)

    async def worker() -> None:
        for n in numbers:
            await call(n)
            tally.done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _run_sdk_on(
    base_url: str,
    ids: Sequence[str],
    count: int | None,
    concurrency: int,
    tally: Tally,
    *,
    backend: str | None,
) -> None:
    from osvi_async import OsviClient

    # Only a non-default backend is named, so `sdk` runs on SDK versions without the option.
    options: dict[str, Any] = {} if backend is None else {"http_backend": backend}
    pool = len(ids)
    async with OsviClient(
        TOKEN, base_url=base_url, timeout=TIMEOUT_SECONDS, max_connections=concurrency, **options
    ) as client:

        async def call(n: int) -> None:
            await client.inject_context(ids[n % pool], CONTEXT)

        await _spread(count, concurrency, tally, call)


async def run_sdk(
    base_url: str, ids: Sequence[str], count: int | None, concurrency: int, tally: Tally
) -> None:
    """osvi_async: OsviClient.inject_context, one call per request (aiohttp underneath)."""
    await _run_sdk_on(base_url, ids, count, concurrency, tally, backend=None)


async def run_sdk_reqwest(
    base_url: str, ids: Sequence[str], count: int | None, concurrency: int, tally: Tally
) -> None:
    """osvi_async on its reqwest transport: OsviClient(http_backend="reqwest").inject_context."""
    await _run_sdk_on(base_url, ids, count, concurrency, tally, backend="reqwest")


async def run_sdk_many(
    base_url: str, ids: Sequence[str], count: int | None, concurrency: int, tally: Tally
) -> None:
    """osvi_async: OsviClient.inject_many over a generator."""
    from osvi_async import OsviClient

    pool = len(ids)
    async with OsviClient(
        TOKEN, base_url=base_url, timeout=TIMEOUT_SECONDS, max_connections=concurrency
    ) as client:
        items = ((ids[n % pool], CONTEXT) for n in _numbers(count))
        async with client.inject_many(items, concurrency=concurrency) as run:
            async for outcome in run:
                if not outcome.ok:
                    raise RuntimeError(f"inject_many item {outcome.index}: {outcome.error!r}")
                tally.done += 1


async def run_aiohttp(
    base_url: str, ids: Sequence[str], count: int | None, concurrency: int, tally: Tally
) -> None:
    """Hand-written aiohttp, the way a competent user writes it."""
    import aiohttp

    pool = len(ids)
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"API-Token": TOKEN}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=timeout
    ) as session:

        async def call(n: int) -> None:
            session_id = ids[n % pool]
            url = f"{base_url}/v1/chat/session/{session_id}/inject_context"
            async with session.post(url, json={"context": CONTEXT}) as response:
                response.raise_for_status()
                check_answer(await response.json(), session_id)

        await _spread(count, concurrency, tally, call)


async def run_pyreqwest(
    base_url: str, ids: Sequence[str], count: int | None, concurrency: int, tally: Tally
) -> None:
    """Hand-written pyreqwest (Rust reqwest): `body_json`, `await response.json()`."""
    from datetime import timedelta

    from pyreqwest.client import ClientBuilder

    pool = len(ids)
    client = (
        ClientBuilder()
        .max_connections(concurrency)
        .default_headers({"API-Token": TOKEN})
        .timeout(timedelta(seconds=TIMEOUT_SECONDS))
        .build()
    )
    async with client:

        async def call(n: int) -> None:
            session_id = ids[n % pool]
            url = f"{base_url}/v1/chat/session/{session_id}/inject_context"
            response = await client.post(url).body_json({"context": CONTEXT}).build().send()
            if response.status != 200:
                raise RuntimeError(f"pyreqwest got status {response.status}")
            check_answer(await response.json(), session_id)

        await _spread(count, concurrency, tally, call)


async def run_aiohttp_tenacity(
    base_url: str, ids: Sequence[str], count: int | None, concurrency: int, tally: Tally
) -> None:
    """Hand-written aiohttp with every call wrapped in tenacity's AsyncRetrying."""
    import aiohttp
    import tenacity

    pool = len(ids)
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"API-Token": TOKEN}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=timeout
    ) as session:

        async def call(n: int) -> None:
            session_id = ids[n % pool]
            url = f"{base_url}/v1/chat/session/{session_id}/inject_context"
            async for attempt in tenacity.AsyncRetrying(
                stop=tenacity.stop_after_attempt(4),
                wait=tenacity.wait_random_exponential(multiplier=0.5, max=8),
                retry=tenacity.retry_if_exception_type(aiohttp.ClientError),
                reraise=True,
            ):
                with attempt:
                    async with session.post(url, json={"context": CONTEXT}) as response:
                        response.raise_for_status()
                        check_answer(await response.json(), session_id)

        await _spread(count, concurrency, tally, call)


async def run_httpx(
    base_url: str, ids: Sequence[str], count: int | None, concurrency: int, tally: Tally
) -> None:
    """httpx.AsyncClient, as generated SDKs use it."""
    import httpx

    pool = len(ids)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, headers={"API-Token": TOKEN}, limits=limits, timeout=TIMEOUT_SECONDS
    ) as client:

        async def call(n: int) -> None:
            session_id = ids[n % pool]
            response = await client.post(
                f"/v1/chat/session/{session_id}/inject_context", json={"context": CONTEXT}
            )
            response.raise_for_status()
            check_answer(response.json(), session_id)

        await _spread(count, concurrency, tally, call)


def _generated_parts() -> tuple[Any, Any, Any, Any]:
    """The generated package's client class, endpoint module, body and 200 models.

    Found by shape rather than by name, since the generator derives names from the spec.
    """
    location = os.environ.get(GENERATED_ENV)
    if not location:
        raise SystemExit(f"the generated client needs {GENERATED_ENV} (bench/run.py sets it)")
    if location not in sys.path:
        sys.path.insert(0, location)
    package = importlib.import_module(GENERATED_PACKAGE)
    api = importlib.import_module(f"{GENERATED_PACKAGE}.api")
    endpoint = None
    for module in pkgutil.walk_packages(api.__path__, f"{GENERATED_PACKAGE}.api."):
        if module.name.endswith("inject_context"):
            endpoint = importlib.import_module(module.name)
    models = importlib.import_module(f"{GENERATED_PACKAGE}.models")
    body = next(getattr(models, name) for name in dir(models) if name.endswith("ContextBody"))
    ok = next(getattr(models, name) for name in dir(models) if name.endswith("Response200"))
    if endpoint is None:
        raise SystemExit("the generated client has no inject_context endpoint module")
    return package.AuthenticatedClient, endpoint, body, ok


async def run_generated(
    base_url: str, ids: Sequence[str], count: int | None, concurrency: int, tally: Tally
) -> None:
    """The client openapi-python-client generates from the spec (httpx underneath)."""
    import httpx

    client_class, endpoint, body_class, ok_class = _generated_parts()
    pool = len(ids)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = client_class(
        base_url=base_url,
        token=TOKEN,
        prefix="",
        auth_header_name="API-Token",
        raise_on_unexpected_status=True,
        timeout=httpx.Timeout(TIMEOUT_SECONDS),
        httpx_args={"limits": limits},
    )
    async with client:

        async def call(n: int) -> None:
            session_id = ids[n % pool]
            parsed = await endpoint.asyncio(
                session_id, client=client, body=body_class(context=CONTEXT)
            )
            if (
                not isinstance(parsed, ok_class)
                or parsed.success is not True
                or parsed.data.session_id != session_id
            ):
                raise RuntimeError(f"generated client got {parsed!r}")

        await _spread(count, concurrency, tally, call)


CLIENTS: Final[dict[str, Runner]] = {
    "sdk": run_sdk,
    "sdk_many": run_sdk_many,
    "aiohttp": run_aiohttp,
    "aiohttp_tenacity": run_aiohttp_tenacity,
    "httpx": run_httpx,
    "generated": run_generated,
    "pyreqwest": run_pyreqwest,
    "sdk_reqwest": run_sdk_reqwest,
}
"""Every client, by the name the driver and the tables use."""
