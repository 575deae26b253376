"""The public API as users write it; checked by `mypy --strict`, never collected by pytest.

If a change to the package makes this file fail to type-check, users' code breaks the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any, assert_type

import attrs

import osvi_async
import osvi_async._client
import osvi_async._config
from osvi_async import (
    APIConnectionError,
    APIStatusError,
    BadRequestError,
    BulkSummary,
    ChatSession,
    CircuitBreaker,
    ClientValidationError,
    CustomerInjectRequest,
    EngineError,
    EngineRejectedError,
    InjectContextResult,
    InjectOutcome,
    InjectRequest,
    ItemHeldError,
    MessageReply,
    NotFoundError,
    OsviClient,
    OsviError,
    ResponseDecodeError,
    RetryBudget,
    RetryEvent,
    RetryPolicy,
    RunStoppedError,
    SupportCommand,
    SupportResult,
    models,
)
from osvi_async.models import SessionMetadata
from osvi_async.testing import FaultPlan, OsviEmulator
from osvi_async.worker import Publisher, Worker, WorkerStats

# `osvi_async` exports lazily through a module `__getattr__`, which mypy types as `Any`: a name
# left out of its TYPE_CHECKING imports would pass every check below as `Any`. Pin each one.
assert_type(OsviClient, type[osvi_async._client.OsviClient])
assert_type(RetryPolicy, type[osvi_async._config.RetryPolicy])
assert_type(ChatSession, type[models.ChatSession])
assert_type(MessageReply, type[models.MessageReply])
assert_type(SupportResult, type[models.SupportResult])
assert_type(CustomerInjectRequest, type[models.CustomerInjectRequest])
assert_type(InjectRequest, type[models.InjectRequest])
assert_type(InjectContextResult, type[models.InjectContextResult])
assert_type(osvi_async.SessionMetadata, type[SessionMetadata])

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


AGENT = "agent_IsZ3Q6Sf_60Eh26XQMGbz-R_og"
CUSTOMER = "+15551112222"


def describe(session: ChatSession) -> str:
    session_id: str = session.id
    customer: str | None = session.customer_id
    agent_id: int | str | None = session.chat_agent_id
    account: int | str | None = session.account_id
    mode: str | None = session.mode
    wants_human: bool = session.help_requested
    status: str | None = session.status
    state: str | None = session.current_state
    metadata: SessionMetadata = session.metadata
    input_fields: Mapping[str, Any] = metadata.input_fields
    state_fields: Mapping[str, Any] = metadata.state_fields
    bucket: tuple[str, ...] = metadata.context
    human: str | None = session.active_human
    created: datetime | None = session.created_at
    updated: datetime | None = session.updated_at
    age = (updated - created).total_seconds() if updated and created else 0.0
    return (
        f"{session_id} {customer} {agent_id} {account} {mode} {wants_human} {status} {state} "
        f"{len(input_fields)} {len(state_fields)} {len(bucket)} {human} {age:.0f}"
    )


async def sessions(client: OsviClient) -> ChatSession:
    opened: ChatSession = await client.create_session(
        AGENT,
        CUSTOMER,
        input_fields={"first_name": "Alex", "orders": 3},
        context=["Came from the pricing page"],
        timeout=5.0,
        retry=RetryPolicy(retry_ambiguous=False),
    )
    log.info("opened %s", describe(opened))
    try:
        found: ChatSession = await client.get_active_session(CUSTOMER, AGENT, timeout=2.0)
    except NotFoundError as exc:
        applied: bool = exc.may_have_been_applied
        log.info("none (maybe applied: %s)", applied)
        return opened
    by_agent: Mapping[str, ChatSession] = await client.get_active_sessions(CUSTOMER)
    for agent_uuid, session in by_agent.items():
        log.info("%s: %s", agent_uuid, session.id)
    closed: SupportResult = await client.close_session(found.id, retry=RetryPolicy.none())
    log.info("closed: %s", closed.state)
    return found


async def converse(client: OsviClient, text: str) -> str:
    try:
        reply: MessageReply = await client.send_message(AGENT, CUSTOMER, text)
    except OsviError as exc:
        if exc.may_have_been_applied:
            await client.get_active_session(CUSTOMER, AGENT)
        raise
    session_id: str = reply.session_id
    state: str | None = reply.state
    mode: str | None = reply.mode
    if reply.help_requested:
        result: SupportResult = await client.support(session_id, "takeover", "Sam here.")
        human: str | None = result.active_human
        command: str | None = result.command
        log.info("%s took over (%s, %s)", human, command, result.state)
        await client.support(session_id, message="Checking your order now.")
        whispered = await client.support(session_id, "whisper", message="Refund already tried.")
        doubled: bool = whispered.possible_duplicate
        told = await client.support(session_id, command="tell", message="Offer a callback.")
        agent_reply: str | None = told.reply
        log.info("%s %s", doubled, agent_reply)
        await client.support(session_id, "end", timeout=3.0)
    again: MessageReply = await client.send_message(
        AGENT, CUSTOMER, "thanks", session_id=session_id, retry=RetryPolicy(retry_ambiguous=True)
    )
    resent: bool = again.possible_duplicate
    closing: SupportCommand = "close"
    await client.support(session_id, closing, "Goodbye")
    return f"{state} {mode} {again.reply} {resent}"


async def note_for_customer(client: OsviClient, customer_id: str, summary: str) -> int:
    try:
        result: InjectContextResult = await client.inject_context_for_customer(
            customer_id, AGENT, summary, timeout=5.0, retry=RetryPolicy()
        )
    except NotFoundError:
        return 0
    except BadRequestError as exc:
        messages: tuple[str, ...] = exc.errors
        log.warning("refused: %s", "; ".join(messages))
        return 0
    except ResponseDecodeError as exc:
        log.warning("unreadable answer (maybe applied: %s)", exc.may_have_been_applied)
        raise
    except ClientValidationError:
        raise
    return len(result.context)


async def backfill_customers(client: OsviClient, rows: list[tuple[str, str]]) -> int:
    items: list[InjectRequest | CustomerInjectRequest] = [
        CustomerInjectRequest(customer_id, AGENT, text) for customer_id, text in rows
    ]
    items.append(CustomerInjectRequest(CUSTOMER, AGENT, "resent", may_have_been_applied=True))
    items.append(InjectRequest(session_id="4718a326-417b-4dda-90d0-21fd65a11cb8", context="x"))
    done = 0
    async with client.inject_many(items, concurrency=8) as run:
        async for outcome in run:
            request: InjectRequest | CustomerInjectRequest | None = outcome.request
            if isinstance(request, CustomerInjectRequest):
                pair: tuple[str, str] = (request.customer_id, request.agent_uuid)
                log.info("%s: %s", pair, outcome.ok)
            done += outcome.ok
    return done


def cached_client() -> OsviClient:
    return OsviClient(
        "0123456789abcdef",
        base_url="http://127.0.0.1:8787",
        session_cache_ttl=10.0,
        session_cache_size=1_000,
    )


async def through_the_broker(client: OsviClient, broker: str) -> WorkerStats:
    async with Publisher(broker, partitions=16) as publisher:
        message_id: str = await publisher.publish_for_customer(CUSTOMER, AGENT, "Call ended.")
        await publisher.publish(InjectRequest("4718a326-417b-4dda-90d0-21fd65a11cb8", "x"))
        log.info("published %s", message_id)

    def report(outcome: InjectOutcome, message_id: str | None) -> None:
        log.info("%s %s", message_id, outcome.ok)

    async with Worker(client, broker, partitions=16, grace=5.0, on_outcome=report) as worker:
        worker.stop()
        await worker.wait()
    return worker.stats


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
