"""OsviClient against real sockets on 127.0.0.1: the emulator, and a few hostile servers."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from osvi_async import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ClientClosedError,
    ClientValidationError,
    EngineError,
    EngineRejectedError,
    NotFoundError,
    OsviClient,
    OsviError,
    ResponseDecodeError,
    RetryPolicy,
)
from osvi_async.testing import FaultPlan, OsviEmulator
from tests.integration.conftest import FAST_RETRY, open_fds, other_tasks
from tests.support import inject_server


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `condition` every millisecond until it holds; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


async def test_inject_context_appends_and_returns_bucket(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """Six entries: the server applied all six, the bucket keeps the last five, in order."""
    session_id = osvi_emulator.create_session()
    results = [await live_client.inject_context(session_id, f"entry {i}") for i in range(6)]
    assert osvi_emulator.applied(session_id) == tuple(f"entry {i}" for i in range(6))
    assert results[-1].context == tuple(f"entry {i}" for i in range(1, 6))
    assert results[-1].context == osvi_emulator.bucket(session_id)
    assert [r.attempts for r in results] == [1] * 6


async def test_502_502_200_succeeds_with_three_attempts(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """Two engine errors then success: attempts == 3 and the entry applied exactly once."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session_id, ["engine_error", "engine_error"])
    result = await live_client.inject_context(session_id, "summary")
    assert result.attempts == 3
    assert osvi_emulator.requests_for(session_id) == 3
    assert osvi_emulator.applied(session_id) == ("summary",)


async def test_engine_rejection_stops_at_once(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """An engine refusal is raised after one request, with the engine's reason as data."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session_id, ["engine_rejected", "engine_rejected"])
    with pytest.raises(EngineRejectedError) as caught:
        await live_client.inject_context(session_id, "summary")
    assert caught.value.upstream_body == {"state": "rejected", "reason": "context_rejected"}
    assert osvi_emulator.requests_for(session_id) == 1
    assert osvi_emulator.applied(session_id) == ()


async def test_proxy_html_502_is_retried(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """An HTML 502 from the proxy is retried and then succeeds."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session_id, ["proxy_html_502", "unavailable"])
    result = await live_client.inject_context(session_id, "x")
    assert result.attempts == 3
    assert osvi_emulator.applied(session_id) == ("x",)


async def test_exhausted_retries_raise_last_engine_error(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """Four engine errors: EngineError with attempts == 4, four requests, nothing applied."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session_id, ["engine_error"] * 4)
    with pytest.raises(EngineError) as caught:
        await live_client.inject_context(session_id, "x")
    assert caught.value.attempts == 4
    assert osvi_emulator.requests_for(session_id) == 4
    assert osvi_emulator.applied(session_id) == ()


async def test_rate_limit_honours_retry_after(osvi_emulator: OsviEmulator) -> None:
    """A 429 with Retry-After: 1 makes the client wait about a second before the retry."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session_id, ["rate_limited"])
    waits: list[float] = []

    async def recording_sleep(seconds: float) -> None:
        waits.append(seconds)

    policy = RetryPolicy(sleep=recording_sleep)
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=policy
    ) as client:
        result = await client.inject_context(session_id, "x")
    assert result.attempts == 2
    assert waits == [1.0]


async def test_closed_session_and_wrong_token(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """A closed session is NotFoundError; a wrong token is AuthenticationError; no retries."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.close_session(session_id)
    with pytest.raises(NotFoundError) as not_found:
        await live_client.inject_context(session_id, "x")
    assert (not_found.value.code, not_found.value.attempts) == ("session_not_found", 1)

    async with OsviClient("wrong-token-0000", base_url=osvi_emulator.base_url) as client:
        with pytest.raises(AuthenticationError) as denied:
            await client.inject_context(osvi_emulator.create_session(), "x")
    assert denied.value.attempts == 1
    assert "wrong-token-0000" not in str(denied.value)


async def test_connection_refused_is_typed_not_sent() -> None:
    """Nothing listening: APIConnectionError with request_sent False, after every retry."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with OsviClient(
        "0123456789abcdef", base_url=f"http://127.0.0.1:{port}", retry=FAST_RETRY
    ) as client:
        with pytest.raises(APIConnectionError) as caught:
            await client.inject_context("4718a326-417b-4dda-90d0-21fd65a11cb8", "x")
    assert type(caught.value) is APIConnectionError
    assert caught.value.request_sent is False
    assert caught.value.attempts == 4
    assert "127.0.0.1" in str(caught.value)


async def test_timeout_is_typed(osvi_emulator: OsviEmulator) -> None:
    """A server that never answers: APITimeoutError after the per-attempt timeout."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session_id, ["hang", "hang"])
    async with OsviClient(
        osvi_emulator.api_token,
        base_url=osvi_emulator.base_url,
        timeout=0.2,
        retry=RetryPolicy(max_retries=1, initial_delay=0.001),
    ) as client:
        started = time.monotonic()
        with pytest.raises(APITimeoutError) as caught:
            await client.inject_context(session_id, "x")
        elapsed = time.monotonic() - started
    assert caught.value.attempts == 2
    assert caught.value.request_sent is True
    assert osvi_emulator.requests_for(session_id) == 2
    assert 0.4 <= elapsed < 2.0


async def test_deadline_cuts_the_last_attempt_short(osvi_emulator: OsviEmulator) -> None:
    """With a 0.5 s deadline and a 5 s timeout, a hanging server is given up on at 0.5 s."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session_id, ["hang"] * 5)
    policy = RetryPolicy(deadline=0.5, initial_delay=0.001)
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, timeout=5.0, retry=policy
    ) as client:
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            await client.inject_context(session_id, "x")
        elapsed = time.monotonic() - started
    assert elapsed < 1.5


async def test_ambiguous_drop_is_retried_and_doubles(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """Applied-then-dropped is retried by default (at-least-once): the server applied it twice."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session_id, ["ambiguous_drop"])
    result = await live_client.inject_context(session_id, "x")
    assert result.attempts == 2
    assert result.possible_duplicate is True
    assert osvi_emulator.applied(session_id) == ("x", "x")


async def test_at_most_once_policy_reports_instead(osvi_emulator: OsviEmulator) -> None:
    """With connection retries off, the drop is reported as sent, and applied only once."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session_id, ["ambiguous_drop"])
    policy = RetryPolicy(retry_connection_errors=False, retry_timeouts=False)
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=policy
    ) as client:
        with pytest.raises(APIConnectionError) as caught:
            await client.inject_context(session_id, "x")
    assert caught.value.request_sent is True
    assert osvi_emulator.applied(session_id) == ("x",)


async def test_thousand_concurrent_calls_use_at_most_twenty_connections(
    osvi_emulator: OsviEmulator,
) -> None:
    """1,000 concurrent calls with max_connections=20: all applied, never more than 20 sockets."""
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=0.002)
    sessions = [osvi_emulator.create_session() for _ in range(50)]
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, max_connections=20
    ) as client:
        results = await asyncio.gather(
            *(client.inject_context(sessions[i % 50], f"entry {i}") for i in range(1000))
        )
    stats = osvi_emulator.stats
    assert len(results) == 1000
    assert sum(len(osvi_emulator.applied(s)) for s in sessions) == 1000
    assert stats.peak_open_connections <= 20
    assert stats.connections_opened <= 20
    assert stats.peak_in_flight == 20  # the limit was reached, so the check above means something
    await wait_until(lambda: osvi_emulator.stats.open_connections == 0)


async def test_cancel_mid_request_leaks_nothing(osvi_emulator: OsviEmulator) -> None:
    """Cancelling a call while the server holds it leaves no task, socket or warning behind."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session_id, ["hang"])
    fds_before = open_fds()
    client = OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url)
    task = asyncio.create_task(client.inject_context(session_id, "x"))
    await wait_until(lambda: osvi_emulator.stats.in_flight == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await client.close()
    await wait_until(lambda: osvi_emulator.stats.open_connections == 0)
    assert other_tasks() == set()
    assert open_fds() <= fds_before
    assert osvi_emulator.requests_for(session_id) == 1


async def test_cancel_mid_backoff_is_immediate(osvi_emulator: OsviEmulator) -> None:
    """Cancelling during a 30 s backoff returns at once and sends nothing more."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session_id, ["engine_error"])
    policy = RetryPolicy(initial_delay=30.0, max_delay=30.0, random=lambda: 1.0)
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=policy
    ) as client:
        task = asyncio.create_task(client.inject_context(session_id, "x"))
        await wait_until(lambda: osvi_emulator.requests_for(session_id) == 1)
        await asyncio.sleep(0.05)  # the failed answer is read; the client is now sleeping
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 0.5
    await asyncio.sleep(0.05)
    assert osvi_emulator.requests_for(session_id) == 1
    assert osvi_emulator.applied(session_id) == ()
    assert other_tasks() == set()


@pytest.mark.parametrize("policy", [FAST_RETRY, RetryPolicy.none()], ids=["retries", "no-retry"])
async def test_close_while_calls_wait_for_a_connection(
    osvi_emulator: OsviEmulator, policy: RetryPolicy
) -> None:
    """close() with calls queued for the pool: typed errors, no CancelledError, nothing sent after.

    Queued calls end in ClientClosedError (certainly not applied); calls already on the wire
    end in APIConnectionError with may_have_been_applied, so every applied entry is flagged.
    """
    session_id = osvi_emulator.create_session()
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=0.2)
    client = OsviClient(
        osvi_emulator.api_token,
        base_url=osvi_emulator.base_url,
        max_connections=2,
        retry=policy,
    )
    texts = [f"entry {i}" for i in range(20)]
    tasks = [asyncio.create_task(client.inject_context(session_id, text)) for text in texts]
    await wait_until(lambda: osvi_emulator.stats.in_flight == 2)
    await client.close()
    sent_at_close = osvi_emulator.stats.requests_total
    endings = await asyncio.gather(*tasks, return_exceptions=True)
    await wait_until(lambda: osvi_emulator.stats.in_flight == 0)
    assert osvi_emulator.stats.requests_total == sent_at_close == 2
    assert not [e for e in endings if isinstance(e, asyncio.CancelledError)]
    assert all(isinstance(e, OsviError) for e in endings), endings
    closed = [e for e in endings if isinstance(e, ClientClosedError)]
    assert len(closed) == 18
    assert not any(e.may_have_been_applied for e in closed)
    cut_off = [e for e in endings if isinstance(e, APIConnectionError)]
    assert len(cut_off) == 2
    assert all(e.request_sent and e.may_have_been_applied for e in cut_off)
    applied = osvi_emulator.applied(session_id)
    for text, ending in zip(texts, endings, strict=True):
        if text in applied:
            assert isinstance(ending, OsviError)
            assert ending.may_have_been_applied


async def test_cancelled_call_waiting_for_a_connection_stays_cancelled(
    osvi_emulator: OsviEmulator,
) -> None:
    """A caller's own cancel of a call queued for the pool still ends in CancelledError."""
    session_id = osvi_emulator.create_session()
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=0.2)
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, max_connections=1
    ) as client:
        first = asyncio.create_task(client.inject_context(session_id, "first"))
        queued = asyncio.create_task(client.inject_context(session_id, "queued"))
        await wait_until(lambda: osvi_emulator.stats.in_flight == 1)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        await first
    assert osvi_emulator.applied(session_id) == ("first",)
    assert osvi_emulator.stats.requests_total == 1


@pytest.mark.aiohttp_only  # borrows an aiohttp session
async def test_borrowed_session_carries_requests(osvi_emulator: OsviEmulator) -> None:
    """A caller's aiohttp session is used for the request and left open by close()."""
    session_id = osvi_emulator.create_session()
    async with aiohttp.ClientSession() as own:
        client = OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url, session=own)
        await client.inject_context(session_id, "x")
        await client.close()
        assert not own.closed
    assert osvi_emulator.applied(session_id) == ("x",)


@pytest.fixture
async def hostile_server() -> AsyncIterator[Callable[[web.Response], Awaitable[str]]]:
    """Starts a one-route server on 127.0.0.1 that answers every POST with a given response."""
    async with contextlib.AsyncExitStack() as servers:

        async def start(response: web.Response) -> str:
            async def handler(_request: web.Request) -> web.StreamResponse:
                return response

            return await servers.enter_async_context(inject_server(handler))

        yield start


async def test_streamed_oversized_body_is_refused(
    hostile_server: Callable[[web.Response], Awaitable[str]],
) -> None:
    """A chunked 16 MiB answer with no length is cut off at the 4 MiB cap."""

    big = web.Response(body=b"x" * (16 * 1024 * 1024))
    big.enable_chunked_encoding()
    base_url = await hostile_server(big)
    async with OsviClient("0123456789abcdef", base_url=base_url) as client:
        with pytest.raises(ResponseDecodeError, match="larger than 4194304 bytes"):
            await client.inject_context("4718a326-417b-4dda-90d0-21fd65a11cb8", "x")


async def test_gzip_bomb_is_refused(
    hostile_server: Callable[[web.Response], Awaitable[str]],
) -> None:
    """A 40 KiB gzip body that inflates to 40 MiB is refused at the decompressed cap."""
    bomb = gzip.compress(b"\0" * (40 * 1024 * 1024))
    assert len(bomb) < 100 * 1024
    response = web.Response(body=bomb, headers={"Content-Encoding": "gzip"})
    base_url = await hostile_server(response)
    async with OsviClient("0123456789abcdef", base_url=base_url) as client:
        with pytest.raises(ResponseDecodeError, match="larger than"):
            await client.inject_context("4718a326-417b-4dda-90d0-21fd65a11cb8", "x")


async def test_success_for_another_session_is_a_decode_error_sent_once() -> None:
    """A server answering 200 for another session: ResponseDecodeError, one request, no retry."""
    asked = "4718a326-417b-4dda-90d0-21fd65a11cb8"
    other = "0b5e3c1a-9f2d-4c7e-8a61-3d2f1e0c9b8a"
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.match_info["id"])
        return web.json_response({"success": True, "data": {"session_id": other, "context": []}})

    async with (
        inject_server(handler) as base_url,
        OsviClient("0123456789abcdef", base_url=base_url, retry=FAST_RETRY) as client,
    ):
        with pytest.raises(ResponseDecodeError, match=other) as caught:
            await client.inject_context(asked.upper(), "x")
    assert seen == [asked.upper()]
    assert caught.value.may_have_been_applied is True


async def test_same_session_in_other_case_is_accepted(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """The emulator answers with its own spelling of the id; case alone is no mismatch."""
    session_id = osvi_emulator.create_session()
    result = await live_client.inject_context(session_id.upper(), "x")
    assert result.session_id.lower() == session_id.lower()
    assert osvi_emulator.applied(session_id) == ("x",)


FIFTY_MB = 50 * 1024 * 1024


async def test_a_50_mb_context_is_refused_before_sending(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """inject_context and inject_many refuse it naming both sizes; the server saw nothing."""
    session_id = osvi_emulator.create_session()
    huge = "x" * FIFTY_MB
    with pytest.raises(ClientValidationError) as caught:
        await live_client.inject_context(session_id, huge)
    assert f"{FIFTY_MB} bytes" in str(caught.value)
    assert "max_context_bytes=1048576" in str(caught.value)
    async with live_client.inject_many([(session_id, huge), (session_id, "small")]) as run:
        outcomes = sorted([outcome async for outcome in run], key=lambda o: o.index)
    assert isinstance(outcomes[0].error, ClientValidationError)
    assert f"{FIFTY_MB} bytes" in str(outcomes[0].error)
    assert outcomes[0].error.may_have_been_applied is False
    assert run.summary.invalid == 1
    assert osvi_emulator.applied(session_id) == ("small",)
    assert osvi_emulator.requests_for(session_id) == 1


@pytest.mark.parametrize(
    "context",
    ["a" * 1_048_576, '"' * 600_000, "\x01" * 170_000],
    ids=["1 MiB", "quotes escaped to 1.1 MiB", "controls escaped to 1 MiB"],
)
async def test_the_largest_contexts_the_client_sends_reach_the_emulator(
    live_client: OsviClient, osvi_emulator: OsviEmulator, context: str
) -> None:
    """A context up to max_context_bytes, its JSON escapes included, is applied as sent."""
    session_id = osvi_emulator.create_session()
    result = await live_client.inject_context(session_id, context)
    assert result.context[-1] == context
    assert osvi_emulator.applied(session_id) == (context,)
