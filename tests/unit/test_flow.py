"""FlowControl: the retry budget, the circuit breaker's states, and the rate limit."""

from __future__ import annotations

import asyncio

import pytest

from osvi_async import CircuitBreaker, CircuitOpenError, EngineError, RetryBudget
from osvi_async._flow import FlowControl

FAILURE = EngineError("x", status=502, code=None, body="")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def enter(control: FlowControl, number: int) -> None:
    """Pass the gate the way the call loop does: at once if ready, else after waiting."""
    if not control.ready(number):
        await control.wait(number)


def flow(
    *,
    budget: RetryBudget | None = None,
    breaker: CircuitBreaker | None = None,
    rate: float | None = None,
    clock: Clock | None = None,
) -> FlowControl:
    """A FlowControl for 4 workers."""
    return FlowControl(
        concurrency=4, budget=budget, breaker=breaker, rate_limit=rate, clock=clock or Clock()
    )


async def test_budget_earns_per_first_attempt_and_success() -> None:
    """Tokens come from first attempts and successes; each retry spends one."""
    control = flow(budget=RetryBudget(per_request=1.0, per_success=0.5))
    assert control.allow_retry() is False  # nothing earned yet
    await enter(control, 1)
    assert control.allow_retry() is True
    assert control.allow_retry() is False
    control.after_attempt(None, outage=False)
    control.after_attempt(None, outage=False)
    assert control.allow_retry() is True
    assert control.allow_retry() is False
    assert control.retries_refused == 3


async def test_budget_is_capped() -> None:
    """A long healthy run banks at most max_tokens retries."""
    control = flow(budget=RetryBudget(max_tokens=3))
    for _ in range(50):
        await enter(control, 1)
    assert sum(control.allow_retry() for _ in range(10)) == 3


async def test_default_cap_scales_with_concurrency() -> None:
    """Without max_tokens the cap is max(100, 4 * concurrency)."""
    control = FlowControl(concurrency=64, budget=RetryBudget(), breaker=None, rate_limit=None)
    for _ in range(1000):
        await enter(control, 1)
    assert sum(control.allow_retry() for _ in range(1000)) == 256


async def test_no_budget_always_allows() -> None:
    """Without a budget every retry the policy wants is allowed."""
    control = flow()
    assert all(control.allow_retry() for _ in range(100))


async def test_breaker_opens_after_threshold_and_probes_after_cooldown() -> None:
    """N failures open it; attempts wait; after the cool-down one probe goes; success closes."""
    clock = Clock()
    control = flow(breaker=CircuitBreaker(failure_threshold=3, cooldown=0.05), clock=clock)
    for _ in range(2):
        control.after_attempt(FAILURE, outage=True)
    assert control.circuit_state == "closed"
    control.after_attempt(FAILURE, outage=True)
    assert control.circuit_state == "open"
    assert control.times_opened == 1

    waiter = asyncio.create_task(enter(control, 2))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # held while open
    clock.now += 0.05
    await asyncio.wait_for(waiter, 1.0)  # becomes the probe
    assert control.circuit_state == "half-open"

    second = asyncio.create_task(enter(control, 1))
    await asyncio.sleep(0.01)
    assert not second.done()  # only one probe at a time
    control.after_attempt(None, outage=False)  # a success from some attempt closes it
    await asyncio.wait_for(second, 1.0)
    assert control.circuit_state == "closed"


async def test_failed_probe_doubles_cooldown() -> None:
    """A probe that fails reopens the circuit with twice the cool-down, up to the maximum."""
    clock = Clock()
    control = flow(
        breaker=CircuitBreaker(failure_threshold=1, cooldown=0.1, max_cooldown=0.15), clock=clock
    )

    async def probe_and_fail() -> None:
        await enter(control, 2)
        control.after_attempt(FAILURE, outage=True)

    control.after_attempt(FAILURE, outage=True)
    clock.now += 0.1
    await probe_and_fail()
    assert control.circuit_state == "open"
    assert control._probe_at == pytest.approx(clock.now + 0.15)  # 0.2 capped at 0.15


async def test_straggler_failure_does_not_reopen_half_open() -> None:
    """A failure from an attempt that is not the probe leaves the probe's verdict pending."""
    clock = Clock()
    control = flow(breaker=CircuitBreaker(failure_threshold=1, cooldown=0.01), clock=clock)
    control.after_attempt(FAILURE, outage=True)
    clock.now += 0.01
    probe = asyncio.create_task(enter(control, 2))
    await probe
    control.after_attempt(FAILURE, outage=True)  # this task is not the probe's task
    assert control.circuit_state == "half-open"


async def test_cancelled_probe_lets_the_next_attempt_probe() -> None:
    """If the probe is cancelled, the circuit reopens with the probe due at once."""
    clock = Clock()
    control = flow(breaker=CircuitBreaker(failure_threshold=1, cooldown=0.01), clock=clock)
    control.after_attempt(FAILURE, outage=True)
    clock.now += 0.01

    async def probe_then_abandon() -> None:
        await enter(control, 2)
        control.attempt_abandoned()

    await asyncio.create_task(probe_then_abandon())
    assert control.circuit_state == "open"
    await asyncio.wait_for(enter(control, 1), 1.0)
    assert control.circuit_state == "half-open"


async def test_breaker_gives_up_with_circuit_open_error() -> None:
    """Open longer than give_up_after: waiting attempts fail unsent with CircuitOpenError."""
    clock = Clock()
    control = flow(
        breaker=CircuitBreaker(failure_threshold=1, cooldown=10.0, give_up_after=1.0),
        clock=clock,
    )
    control.after_attempt(FAILURE, outage=True)
    clock.now += 1.0
    with pytest.raises(CircuitOpenError) as caught:
        await enter(control, 3)
    assert caught.value.attempts == 2


async def test_non_retryable_answer_counts_as_reachable() -> None:
    """A 4xx means the API is up: it resets the failure count."""
    control = flow(breaker=CircuitBreaker(failure_threshold=2))
    control.after_attempt(FAILURE, outage=True)
    control.after_attempt(FAILURE, outage=False)
    control.after_attempt(FAILURE, outage=True)
    assert control.circuit_state == "closed"


async def test_rate_limit_reserves_evenly_spaced_slots() -> None:
    """At 100/s, the n-th attempt waits n * 10 ms from the first."""
    clock = Clock()
    control = flow(rate=100.0, clock=clock)
    waits: list[float] = []
    original_sleep = asyncio.sleep

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        await original_sleep(0)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(asyncio, "sleep", fake_sleep)
        for _ in range(3):
            await enter(control, 1)
    assert waits == pytest.approx([0.01, 0.02])


async def test_probe_cancelled_while_waiting_for_a_rate_slot_gives_the_circuit_back() -> None:
    """A call made the probe, then cancelled in the rate-limit wait, does not pin half-open."""
    from osvi_async import RetryPolicy
    from osvi_async._call import call
    from osvi_async._endpoints import INJECT_CONTEXT

    clock = Clock()
    control = flow(
        breaker=CircuitBreaker(failure_threshold=1, cooldown=0.01), rate=1.0, clock=clock
    )
    control.after_attempt(FAILURE, outage=True)
    clock.now += 0.01
    control._next_slot = clock.now + 60  # the next rate slot is a minute away
    task = asyncio.create_task(
        call(
            None,  # type: ignore[arg-type]  # never reached: the call is cancelled first
            INJECT_CONTEXT,
            "http://127.0.0.1:9/x",
            b"{}",
            timeout=1.0,
            policy=RetryPolicy(),
            session_id="4718a326-417b-4dda-90d0-21fd65a11cb8",
            gate=control,
        )
    )
    await asyncio.sleep(0.01)
    assert control.circuit_state == "half-open"  # it became the probe, then waits for a slot
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert control.circuit_state == "open"
