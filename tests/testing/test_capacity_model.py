"""CapacityModel's validation and the gate's decisions, without HTTP."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from osvi_async.testing import CapacityModel
from osvi_async.testing._capacity import CapacityGate


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"limit": 0}, "limit must be an integer >= 1"),
        ({"limit": True}, "limit must be an integer >= 1"),
        ({"service_time": 0}, "service_time must be a finite number of seconds > 0"),
        ({"service_time": float("inf")}, "service_time must be a finite"),
        ({"jitter": 1.0}, "jitter must be within [0, 1)"),
        ({"jitter": -0.1}, "jitter must be within [0, 1)"),
        ({"queue_limit": -1}, "queue_limit must be an integer >= 0"),
        ({"refusal_status": 500}, "refusal_status must be 429 or 503"),
        ({"retry_after": -1}, "retry_after must be None or an integer >= 0"),
        ({"schedule": ((2.0, 3), (1.0, 4))}, "schedule times must be finite seconds >= 0"),
        ({"schedule": ((-0.5, 3),)}, "schedule times must be finite seconds >= 0"),
        ({"schedule": ((1.0, 0),)}, "schedule limits must be integers >= 1"),
        ({"endpoints": {"inbox"}}, "endpoints must be a non-empty set of"),
        ({"endpoints": ()}, "endpoints must be a non-empty set of"),
    ],
)
def test_bad_fields_raise_value_error(fields: dict[str, Any], message: str) -> None:
    """Each out-of-range field is a ValueError that names it."""
    with pytest.raises(ValueError, match=re.escape(message)):
        CapacityModel(**{"limit": 2, **fields})


def test_schedule_and_endpoints_are_normalised() -> None:
    """A list schedule becomes a tuple and a lone endpoint name a one-name set."""
    model = CapacityModel(limit=2, schedule=[(1, 3)], endpoints="inbound")
    assert (model.schedule, model.endpoints) == (((1, 3),), frozenset({"inbound"}))


def test_limit_at_follows_the_schedule() -> None:
    """The limit is the base one until the first step, then each step's from its time on."""
    model = CapacityModel(limit=4, schedule=((1.0, 1), (2.5, 8)))
    assert [model.limit_at(t) for t in (0.0, 0.99, 1.0, 2.49, 2.5, 100.0)] == [4, 4, 1, 1, 8, 8]


def test_jitter_stays_in_bounds_and_repeats_with_the_seed() -> None:
    """Service times lie in service_time*[1-j, 1+j] and the same seed draws the same ones."""
    model = CapacityModel(limit=1, service_time=0.02, jitter=0.5, seed=7)
    gate, again = CapacityGate(model), CapacityGate(model)
    draws = [gate.service_seconds() for _ in range(500)]
    assert all(0.01 <= draw <= 0.03 for draw in draws)
    assert min(draws) < 0.012  # the whole range is used
    assert max(draws) > 0.028
    assert draws == [again.service_seconds() for _ in range(500)]
    other = CapacityGate(CapacityModel(limit=1, service_time=0.02, jitter=0.5, seed=8))
    assert draws != [other.service_seconds() for _ in range(500)]
    assert CapacityGate(CapacityModel(limit=1, service_time=0.02)).service_seconds() == 0.02


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    """A waiter cancelled in the queue frees its place: the next arrival may wait instead."""
    gate = CapacityGate(CapacityModel(limit=1, queue_limit=1))
    assert await gate.acquire() == "admitted"
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert gate.stats().peak_waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()
    assert await second == "admitted"
    assert (gate.stats().served, gate.stats().refused) == (2, 0)


async def test_a_waiter_cancelled_after_being_handed_a_slot_gives_it_back() -> None:
    """The slot handed to a waiter that is cancelled before it runs goes to the next one."""
    gate = CapacityGate(CapacityModel(limit=1, queue_limit=2))
    assert await gate.acquire() == "admitted"
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == "admitted"
    gate.release()
    assert await gate.acquire() == "admitted"  # nothing leaked: one slot, free again
    assert gate.stats().peak_in_service == 1


async def test_close_releases_waiters_as_closed() -> None:
    """Closing the gate answers every waiter "closed" and every later arrival too."""
    gate = CapacityGate(CapacityModel(limit=1, queue_limit=3))
    assert await gate.acquire() == "admitted"
    waiters = [asyncio.create_task(gate.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    gate.close()
    assert await asyncio.gather(*waiters) == ["closed"] * 3
    assert await gate.acquire() == "closed"
