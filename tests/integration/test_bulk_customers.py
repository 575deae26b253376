"""Bulk items addressed by customer, mixed with items addressed by session, on a real socket:
input order per session whatever the address, lookups ahead of order, stops and small windows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from osvi_async import (
    CustomerInjectRequest,
    InjectOutcome,
    InjectRequest,
    ItemHeldError,
    OsviClient,
    RetryPolicy,
    RunStoppedError,
    ServerError,
)
from osvi_async.testing import FaultPlan, OsviEmulator

AGENT = "agent_bulk"


def mixed_items(sessions: dict[str, str], per_customer: int) -> list[object]:
    """Entries alternating between the two addresses of each customer's session."""
    items: list[object] = []
    for n in range(per_customer):
        for customer, session_id in sessions.items():
            text = f"{customer} #{n}"
            if n % 2:
                items.append(InjectRequest(session_id, text))
            else:
                items.append(CustomerInjectRequest(customer, AGENT, text))
    return items


async def test_mixed_addresses_keep_each_sessions_input_order(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """Customer rows and session rows for one session land in input order, with latency
    on lookups and injects; one lookup per customer."""
    customers = [f"mix-{n}" for n in range(6)]
    sessions = {c: osvi_emulator.create_session(agent_uuid=AGENT, customer_id=c) for c in customers}
    osvi_emulator.fault_plan = FaultPlan(
        endpoints={"active_session", "inject_context"}, latency=1.0, latency_seconds=(0.0, 0.02)
    )
    items = mixed_items(sessions, 10)
    async with live_client.inject_many(items, concurrency=16) as run:
        outcomes = [outcome async for outcome in run]
    assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes if not o.ok]
    for customer, session_id in sessions.items():
        assert osvi_emulator.applied(session_id) == tuple(f"{customer} #{n}" for n in range(10))
    assert osvi_emulator.requests("active_session") == len(customers)


async def test_lookups_run_ahead_of_input_order(osvi_emulator: OsviEmulator) -> None:
    """Forty customers whose lookups take 50 ms each finish in far less than 40 x 50 ms."""
    customers = [f"slow-{n}" for n in range(40)]
    for customer in customers:
        osvi_emulator.create_session(agent_uuid=AGENT, customer_id=customer)
    osvi_emulator.fault_plan = FaultPlan(
        endpoints={"active_session"}, latency=1.0, latency_seconds=0.05
    )
    items = [CustomerInjectRequest(c, AGENT, "note") for c in customers]
    async with OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url) as client:
        started = asyncio.get_running_loop().time()
        async with client.inject_many(items, concurrency=16) as run:
            outcomes = [outcome async for outcome in run]
        elapsed = asyncio.get_running_loop().time() - started
    assert all(outcome.ok for outcome in outcomes)
    # Sequential lookups would need 2 s; 16 at a time need about 3 x 50 ms. The bound is loose
    # on purpose (a busy machine): it only tells "ahead of order" from "one at a time".
    assert elapsed < 1.2


async def test_a_failed_lookup_holds_its_pairs_later_items(osvi_emulator: OsviEmulator) -> None:
    """The lookup fails (503, no retries left): that item fails unsent, the pair's later items
    are held behind it, other customers go on."""
    held_customer = osvi_emulator.create_session(agent_uuid=AGENT, customer_id="held")
    other = osvi_emulator.create_session(agent_uuid=AGENT, customer_id="other")
    plan = FaultPlan()
    plan.script_endpoint("active_session", ["unavailable"])
    osvi_emulator.fault_plan = plan
    items = [
        CustomerInjectRequest("held", AGENT, "first"),
        CustomerInjectRequest("held", AGENT, "second"),
        CustomerInjectRequest("other", AGENT, "kept"),
    ]
    async with (
        OsviClient(
            osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=RetryPolicy.none()
        ) as client,
        client.inject_many(items, concurrency=1) as run,
    ):
        outcomes = sorted([outcome async for outcome in run], key=lambda o: o.index)
    assert isinstance(outcomes[0].error, ServerError)
    assert outcomes[0].error.may_have_been_applied is False
    assert isinstance(outcomes[1].error, ItemHeldError)
    assert outcomes[1].error.waiting_for == 0
    assert outcomes[2].ok
    assert osvi_emulator.applied(held_customer) == ()
    assert osvi_emulator.applied(other) == ("kept",)
    assert run.summary.held == 1


async def test_a_drain_while_lookups_hang_accounts_for_every_item(
    osvi_emulator: OsviEmulator,
) -> None:
    """Items waiting for their session when the run drains are leftovers, not sent."""
    for n in range(5):
        osvi_emulator.create_session(agent_uuid=AGENT, customer_id=f"hang-{n}")
    osvi_emulator.fault_plan = FaultPlan(endpoints={"active_session"}, hang=1.0)
    items = [CustomerInjectRequest(f"hang-{n % 5}", AGENT, f"e{n}") for n in range(20)]
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, timeout=30.0
    ) as client:
        run = client.inject_many(items, concurrency=4)
        async with run:
            consume = asyncio.create_task(anext(aiter(run), None))
            await asyncio.sleep(0.2)
            run.drain(0)
            assert await consume is None
    summary = run.summary
    assert summary.items == summary.not_sent + summary.failed + summary.succeeded
    assert summary.succeeded == 0
    assert len(run.leftovers) == summary.items
    assert all(isinstance(o.error, RunStoppedError) for o in run.leftovers)
    assert all(o.error.may_have_been_applied is False for o in run.leftovers if o.error)


async def test_a_tiny_window_with_slow_lookups_does_not_stall(
    osvi_emulator: OsviEmulator,
) -> None:
    """max_pending=2 and every item waiting for a slow lookup: the run still finishes."""
    session_id = osvi_emulator.create_session(agent_uuid=AGENT, customer_id="tiny")
    osvi_emulator.fault_plan = FaultPlan(
        endpoints={"active_session"}, latency=1.0, latency_seconds=0.02
    )
    items = [CustomerInjectRequest("tiny", AGENT, f"e{n}") for n in range(12)]
    async with (
        OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url) as client,
        client.inject_many(items, concurrency=2, max_pending=2) as run,
    ):
        outcomes = [outcome async for outcome in run]
    assert all(outcome.ok for outcome in outcomes)
    assert osvi_emulator.applied(session_id) == tuple(f"e{n}" for n in range(12))


async def test_lookups_spend_the_runs_retry_budget(osvi_emulator: OsviEmulator) -> None:
    """A total outage of the lookups costs at most 2 requests per item, whatever
    max_retries says, as for injects."""
    osvi_emulator.fault_plan = FaultPlan(endpoints={"active_session"}, unavailable=1.0)
    items = [CustomerInjectRequest(f"out-{n}", AGENT, "note") for n in range(100)]
    policy = RetryPolicy(max_retries=6, initial_delay=0.001, max_delay=0.002)
    async with (
        OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url) as client,
        client.inject_many(items, concurrency=16, retry=policy, circuit_breaker=None) as run,
    ):
        outcomes = [outcome async for outcome in run]
    assert all(isinstance(outcome.error, ServerError) for outcome in outcomes)
    assert osvi_emulator.requests("active_session") <= 2 * len(items)
    assert run.summary.retries_refused > 0


async def test_items_sharing_a_failed_lookup_are_held_behind_the_first(
    osvi_emulator: OsviEmulator,
) -> None:
    """Four items waiting on one lookup that fails: the first fails, the rest are held."""
    osvi_emulator.create_session(agent_uuid=AGENT, customer_id="shared")
    plan = FaultPlan()
    plan.script_endpoint("active_session", ["unavailable"])
    osvi_emulator.fault_plan = plan
    items = [CustomerInjectRequest("shared", AGENT, f"e{n}") for n in range(6)]
    async with (
        OsviClient(
            osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=RetryPolicy.none()
        ) as client,
        client.inject_many(items, concurrency=4) as run,
    ):
        outcomes = sorted([outcome async for outcome in run], key=lambda o: o.index)
    assert isinstance(outcomes[0].error, ServerError)
    held = [outcome.error for outcome in outcomes[1:]]
    assert all(isinstance(error, ItemHeldError) and error.waiting_for == 0 for error in held)
    assert run.summary.failed == 1
    assert run.summary.held == 5


async def test_items_pulled_before_the_input_failed_still_go_out(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """An input that raises midway: what was pulled is sent (lookups included), then the
    input's error is raised."""
    session_id = osvi_emulator.create_session(agent_uuid=AGENT, customer_id="gen")
    osvi_emulator.fault_plan = FaultPlan(
        endpoints={"active_session"}, latency=1.0, latency_seconds=0.05
    )

    async def items() -> object:
        for n in range(10):
            yield (
                CustomerInjectRequest("gen", AGENT, f"c{n}")
                if n % 2
                else InjectRequest(session_id, f"c{n}")
            )
        raise RuntimeError("input broke")

    outcomes: list[InjectOutcome] = []

    async def consume() -> None:
        async with live_client.inject_many(items()) as run:  # type: ignore[arg-type]
            async for outcome in run:
                outcomes.append(outcome)

    with pytest.raises(RuntimeError, match="input broke"):
        await consume()
    assert len(outcomes) == 10
    assert all(outcome.ok for outcome in outcomes)
    assert osvi_emulator.applied(session_id) == tuple(f"c{n}" for n in range(10))


async def test_a_session_replaced_twice_mid_run_loses_nothing_and_keeps_order(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """The customer's session is closed and reopened twice while a run writes to it: every
    entry lands once, and across the three sessions in input order."""
    first = osvi_emulator.create_session(agent_uuid=AGENT, customer_id="rot")
    osvi_emulator.fault_plan = FaultPlan(
        endpoints={"inject_context"}, latency=1.0, latency_seconds=0.005
    )
    items = [CustomerInjectRequest("rot", AGENT, f"r{n:03}") for n in range(60)]
    sessions = [first]

    async def replace_twice() -> None:
        for _ in range(2):
            while len(osvi_emulator.applied(sessions[-1])) < 10:  # noqa: ASYNC110 - polls the emulator
                await asyncio.sleep(0.002)
            sessions.append(osvi_emulator.create_session(agent_uuid=AGENT, customer_id="rot"))

    rotating = asyncio.create_task(replace_twice())
    async with live_client.inject_many(items, concurrency=8) as run:
        outcomes = [outcome async for outcome in run]
    await rotating
    assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes if not o.ok]
    landed = [entry for session_id in sessions for entry in osvi_emulator.applied(session_id)]
    assert landed == [f"r{n:03}" for n in range(60)]
    assert len(sessions) == 3


async def test_an_item_moves_on_when_its_lookup_ends_even_if_the_input_is_idle(
    live_client: OsviClient, osvi_emulator: OsviEmulator
) -> None:
    """A lazy input that pauses after a customer item (a worker's queue): the item is sent
    as soon as its session is known, not when the next item arrives."""
    session_id = osvi_emulator.create_session(agent_uuid=AGENT, customer_id="idle")
    pause = asyncio.Event()

    async def items() -> AsyncIterator[CustomerInjectRequest]:
        yield CustomerInjectRequest("idle", AGENT, "only")
        await pause.wait()  # nothing more for now

    async with live_client.inject_many(items()) as run:
        outcome = await asyncio.wait_for(anext(aiter(run)), 5)
        assert outcome.ok
        pause.set()
    assert osvi_emulator.applied(session_id) == ("only",)
