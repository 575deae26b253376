"""Duplicate awareness: ambiguous failures, possible_duplicate, and at-most-once delivery."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from osvi_async import (
    APIConnectionError,
    EngineError,
    OsviClient,
    RetryPolicy,
)
from osvi_async.testing import OsviEmulator
from tests.support import inject_server

FAST = RetryPolicy(initial_delay=0.001, max_delay=0.005)
AT_MOST_ONCE = RetryPolicy(initial_delay=0.001, max_delay=0.005, retry_ambiguous=False)
SESSION = "4718a326-417b-4dda-90d0-21fd65a11cb8"


def client_for(emulator: OsviEmulator, policy: RetryPolicy = FAST) -> OsviClient:
    """A client on the emulator with the given policy."""
    return OsviClient(emulator.api_token, base_url=emulator.base_url, retry=policy)


@pytest.mark.parametrize("fault", ["ambiguous_drop", "ambiguous_502"])
async def test_retry_after_ambiguous_failure_is_flagged(
    osvi_emulator: OsviEmulator, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Applied-then-failed, retried, applied again: the result says possible_duplicate."""
    session = osvi_emulator.create_session(context=["earlier"])
    osvi_emulator.fault_plan.script(session, [fault])
    async with client_for(osvi_emulator) as client:
        result = await client.inject_context(session, "summary")
    assert osvi_emulator.applied(session) == ("summary", "summary")
    assert result.possible_duplicate is True
    assert result.attempts == 2
    assert "cannot rule out that the entry was appended twice" in caplog.text


async def test_unreachable_engine_is_certainly_not_applied(osvi_emulator: OsviEmulator) -> None:
    """A 502 'engine unreachable' is retried and the clean result is not flagged."""
    session = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session, ["engine_error", "unavailable"])
    async with client_for(osvi_emulator) as client:
        result = await client.inject_context(session, "summary")
    assert osvi_emulator.applied(session) == ("summary",)
    assert (result.attempts, result.possible_duplicate) == (3, False)


async def test_timed_out_attempt_is_flagged_even_when_not_doubled(
    osvi_emulator: OsviEmulator,
) -> None:
    """A timeout (here never applied) may still apply later: the retry's result is flagged."""
    session = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session, ["hang"])
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, timeout=0.3, retry=FAST
    ) as client:
        result = await client.inject_context(session, "summary")
    assert osvi_emulator.applied(session) == ("summary",)
    assert (result.attempts, result.possible_duplicate) == (2, True)


async def test_repeated_text_without_ambiguity_is_not_flagged(
    osvi_emulator: OsviEmulator,
) -> None:
    """Injecting the same text twice on purpose, with clean calls, is never flagged."""
    session = osvi_emulator.create_session()
    async with client_for(osvi_emulator) as client:
        await client.inject_context(session, "same")
        result = await client.inject_context(session, "same")
    assert result.context == ("same", "same")
    assert result.possible_duplicate is False


@pytest.mark.parametrize("fault", ["ambiguous_drop", "ambiguous_502"])
async def test_at_most_once_reports_instead_of_retrying(
    osvi_emulator: OsviEmulator, fault: str
) -> None:
    """retry_ambiguous=False: the maybe-applied failure is raised, and applied only once."""
    session = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session, [fault])
    async with client_for(osvi_emulator, AT_MOST_ONCE) as client:
        with pytest.raises((APIConnectionError, EngineError)) as caught:
            await client.inject_context(session, "summary")
    assert caught.value.attempts == 1
    assert osvi_emulator.applied(session) == ("summary",)
    assert osvi_emulator.requests_for(session) == 1


async def test_at_most_once_still_retries_certain_failures(osvi_emulator: OsviEmulator) -> None:
    """retry_ambiguous=False still retries what certainly did not apply (engine unreachable)."""
    session = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session, ["engine_error", "rate_limited"])
    policy = RetryPolicy(initial_delay=0.001, retry_ambiguous=False, respect_retry_after=False)
    async with client_for(osvi_emulator, policy) as client:
        result = await client.inject_context(session, "summary")
    assert result.attempts == 3
    assert osvi_emulator.applied(session) == ("summary",)


async def test_bulk_summary_counts_possible_duplicates(osvi_emulator: OsviEmulator) -> None:
    """inject_many counts flagged items, and they match the server's doubled entries."""
    sessions = [osvi_emulator.create_session() for _ in range(6)]
    for session in sessions[:3]:
        osvi_emulator.fault_plan.script(session, ["ambiguous_drop"])
    client = client_for(osvi_emulator)
    async with client, client.inject_many([(s, f"entry for {s}") for s in sessions]) as run:
        outcomes = [outcome async for outcome in run]
    flagged = {
        o.request.session_id
        for o in outcomes
        if o.request is not None and o.result is not None and o.result.possible_duplicate
    }
    doubled = {s for s in sessions if len(osvi_emulator.applied(s)) == 2}
    assert flagged == doubled == set(sessions[:3])
    assert run.summary.possible_duplicates == 3


async def test_timed_out_attempt_applied_after_the_retry_is_flagged() -> None:
    """Attempt 1 times out and applies after the retry's answer: the result is flagged.

    The retry's bucket holds the entry once and is not full, yet it was read before the
    timed-out attempt settled, so it cannot rule a duplicate out.
    """
    bucket: list[str] = []
    attempts = 0
    late_apply_done = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        nonlocal attempts
        attempts += 1
        number = attempts
        entry = (await request.json())["context"]
        if number == 1:
            await asyncio.sleep(0.5)  # past the client's 0.2 s timeout, then applies anyway
        bucket.append(entry)
        if number == 1:
            late_apply_done.set()
        data = {"session_id": request.match_info["id"], "context": bucket[-5:]}
        return web.json_response({"success": True, "data": data})

    async with (
        inject_server(handler) as base_url,
        OsviClient("0123456789abcdef", base_url=base_url, timeout=0.2, retry=FAST) as client,
    ):
        result = await client.inject_context(SESSION, "summary")
        assert result.context == ("summary",)  # the retry's bucket: once, not full
        await late_apply_done.wait()
    assert bucket == ["summary", "summary"]
    assert (result.attempts, result.possible_duplicate) == (2, True)


async def test_resend_is_always_flagged(osvi_emulator: OsviEmulator) -> None:
    """may_have_been_applied=True: flagged even when the bucket holds the entry once."""
    session = osvi_emulator.create_session()
    async with client_for(osvi_emulator) as client:
        result = await client.inject_context(session, "summary", may_have_been_applied=True)
    assert osvi_emulator.applied(session) == ("summary",)
    assert (result.attempts, result.possible_duplicate) == (1, True)


async def test_a_502_that_does_not_say_the_engine_answered_may_still_apply() -> None:
    """A JSON 502 "engine timed out", applied later anyway: the retry's result is flagged.

    Only a 502 saying the engine itself answered ("engine returned 500") is settled; an
    engine time-out may still apply after the retry's bucket was read.
    """
    bucket: list[str] = []
    attempts = 0
    late_apply_done = asyncio.Event()

    async def apply_later(entry: str) -> None:
        await asyncio.sleep(0.2)
        bucket.append(entry)
        late_apply_done.set()

    pending: set[asyncio.Task[None]] = set()

    async def handler(request: web.Request) -> web.Response:
        nonlocal attempts
        attempts += 1
        entry = (await request.json())["context"]
        if attempts == 1:
            task = asyncio.create_task(apply_later(entry))
            pending.add(task)
            error = {"success": False, "error": "Python engine timed out", "upstream_body": None}
            return web.json_response(error, status=502)
        bucket.append(entry)
        data = {"session_id": request.match_info["id"], "context": bucket[-5:]}
        return web.json_response({"success": True, "data": data})

    async with (
        inject_server(handler) as base_url,
        OsviClient("0123456789abcdef", base_url=base_url, retry=FAST) as client,
    ):
        result = await client.inject_context(SESSION, "summary")
        assert result.context == ("summary",)  # the retry's bucket: once, not full
        await late_apply_done.wait()
    assert bucket == ["summary", "summary"]
    assert (result.attempts, result.possible_duplicate) == (2, True)


async def test_an_on_retry_hook_that_raises_does_not_hide_the_outcome(
    osvi_emulator: OsviEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A metrics hook that raises is logged and ignored: the call still retries and is flagged."""

    def broken_metrics(event: object) -> None:
        raise RuntimeError("statsd down")

    session = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session, ["ambiguous_drop"])
    policy = RetryPolicy(initial_delay=0.001, max_delay=0.005, on_retry=broken_metrics)
    async with client_for(osvi_emulator, policy) as client:
        result = await client.inject_context(session, "summary")
    assert osvi_emulator.applied(session) == ("summary", "summary")
    assert (result.attempts, result.possible_duplicate) == (2, True)
    assert "the on_retry hook raised; ignored" in caplog.text
