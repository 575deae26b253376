"""The public API as users write it; checked by `mypy --strict`, never collected by pytest.

If a change to the package makes this file fail to type-check, users' code breaks the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import attrs

import osvi_async
from osvi_async import (
    APIConnectionError,
    APIStatusError,
    BulkSummary,
    CircuitBreaker,
    EngineError,
    EngineRejectedError,
    InjectContextResult,
    InjectOutcome,
    InjectRequest,
    ItemHeldError,
    OsviClient,
    OsviError,
    RetryBudget,
    RetryEvent,
    RetryPolicy,
    RunStoppedError,
)
from osvi_async.testing import FaultPlan, OsviEmulator

log = logging.getLogger(__name__)


def on_retry(event: RetryEvent) -> None:
    log.info("retry %d in %.2f s after %s", event.attempt, event.delay, event.error)


async def inject(client: OsviClient, session_id: str, summary: str) -> tuple[str, ...]:
    try:
        result: InjectContextResult = await client.inject_context(session_id, summary)
    except EngineRejectedError as exc:
        reason: object = (exc.upstream_body or {}).get("reason")
        log.warning("refused: %s", reason)
        return ()
    except EngineError as exc:
        upstream: dict[str, object] | None = exc.upstream_body
        log.warning("engine failed after %d attempts: %s", exc.attempts, upstream)
        return ()
    except APIStatusError as exc:
        status: int = exc.status
        code: str | None = exc.code
        log.warning("HTTP %d %s", status, code)
        return ()
    except APIConnectionError as exc:
        sent: bool = exc.request_sent
        log.warning("no answer (sent=%s)", sent)
        return ()
    except OsviError:
        raise
    attempts: int = result.attempts
    doubled: bool = result.possible_duplicate
    log.info("took %d attempts (possible duplicate: %s)", attempts, doubled)
    return result.context


async def backfill(client: OsviClient, rows: list[tuple[str, str]]) -> BulkSummary:
    requests = [InjectRequest(session_id=sid, context=text) for sid, text in rows]
    async with client.inject_many(
        [*requests, *rows],
        concurrency=32,
        rate_limit=100.0,
        retry_budget=RetryBudget(per_request=0.5),
        circuit_breaker=CircuitBreaker(failure_threshold=5, give_up_after=30.0),
    ) as run:
        async for outcome in run:
            checked: InjectOutcome = outcome
            if not checked.ok and checked.error is not None:
                log.warning("item %d: %s", checked.index, checked.error)
    for leftover in run.leftovers:
        if isinstance(leftover.error, RunStoppedError) and leftover.error.request_sent:
            log.warning("item %d may have been applied", leftover.index)
    return run.summary


async def mixed(client: OsviClient, session_id: str) -> int:
    # A list mixing both item forms needs its annotation: mypy would infer list[object].
    items: list[InjectRequest | tuple[str, str]] = [
        InjectRequest(session_id=session_id, context="first"),
        (session_id, "second"),
    ]
    async with client.inject_many(items) as run:
        return len([outcome async for outcome in run])


async def drained(client: OsviClient, rows: list[tuple[str, str]]) -> int:
    journal: list[int] = []
    async with client.inject_many(rows, hold_on_failure=False, on_send=journal.append) as run:
        loop = asyncio.get_running_loop()
        loop.call_later(5.0, run.drain)
        async for outcome in run:
            if isinstance(outcome.error, ItemHeldError):
                waits: int = outcome.error.waiting_for
                log.info("item %d waits for %d", outcome.index, waits)
            if len(journal) > 1000 and not run.draining:
                run.drain(grace=2.5)
    summary = run.summary
    held: int = summary.held
    return held + summary.not_sent + summary.interrupted


async def from_queue(client: OsviClient, queue: asyncio.Queue[tuple[str, str]]) -> int:
    async def items() -> AsyncIterator[tuple[str, str]]:
        while not queue.empty():
            yield await queue.get()

    done = 0
    async for outcome in client.inject_many(items(), retry=RetryPolicy(retry_ambiguous=False)):
        done += outcome.ok
    return done


async def emulate() -> tuple[str, ...]:
    plan = FaultPlan(seed=1, engine_error=0.1, latency=1.0, latency_seconds=(0.0, 0.01))
    async with OsviEmulator(fault_plan=plan) as emulator:
        session = emulator.create_session(context=["first"])
        emulator.fault_plan.script(session, ["engine_error"])
        async with OsviClient(emulator.api_token, base_url=emulator.base_url) as client:
            await client.inject_context(session, "x")
        requests: int = emulator.requests_for(session)
        log.info("%d requests, peak %d", requests, emulator.stats.peak_in_flight)
        return emulator.applied(session)


async def main() -> None:
    policy = RetryPolicy(max_retries=5, deadline=20.0, on_retry=on_retry)
    strict = attrs.evolve(policy, retry_timeouts=False)
    async with OsviClient("0123456789abcdef", base_url="http://127.0.0.1:8787", retry=policy) as c:
        fast = c.with_options(timeout=2.0, retry=RetryPolicy.none())
        await inject(fast, "4718a326-417b-4dda-90d0-21fd65a11cb8", "summary")
        await c.inject_context("4718a326-417b-4dda-90d0-21fd65a11cb8", "x", retry=strict)
    version: str = osvi_async.__version__
    log.info("osvi-async %s", version)


if __name__ == "__main__":
    asyncio.run(main())
