"""The adaptive limit's decisions on synthetic latency and refusal sequences (no sleeping),
and the slots that enforce it."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest

from osvi_async._adaptive import _TOLERANCE as TOLERANCE
from osvi_async._adaptive import (
    AdaptiveConcurrency,
    AdaptiveLimit,
    ConcurrencySlots,
    is_overload,
)
from osvi_async.errors import (
    APIConnectionError,
    APITimeoutError,
    EngineError,
    NotFoundError,
    RateLimitError,
    ServerError,
)

SERVICE = 0.05  # the API's no-load latency in these sequences


class Feed:
    """Drives an `AdaptiveLimit` window by window on a clock that moves as answers arrive."""

    def __init__(self, limit: AdaptiveLimit) -> None:
        self.limit = limit
        self.now = 0.0

    def window(
        self,
        latency: float | None,
        *,
        overloaded: int = 0,
        answers: int = 0,
        held: int | None = None,
    ) -> int:
        """One window of answers (as many as the limit, at least 8), each sent one latency
        before it arrives; `overloaded` of them refused while the API held `held` others
        (by default all the rest of the limit). Returns the limit after it."""
        count = answers or max(self.limit.limit, 8)
        others = self.limit.limit - 1 if held is None else held
        sent_at = self.now
        self.now += latency if latency is not None else SERVICE
        for n in range(count):
            refused = n < overloaded
            self.limit.record(
                None if refused else latency,
                overloaded=refused,
                sent_at=sent_at,
                now=self.now,
                in_flight=others,
            )
        return self.limit.limit

    def queued_latency(self, capacity: int) -> float:
        """The mean latency a FIFO API serving `capacity` at once gives `limit` requests."""
        return SERVICE * max(1.0, self.limit.limit / capacity)


def _latency_for(queued: float, limit: int) -> float:
    """The mean latency from which the limit reads `queued` requests waiting at the API."""
    return TOLERANCE * SERVICE / (1 - queued / limit)


def test_slow_start_doubles_each_window_until_the_maximum() -> None:
    """With no queueing the limit doubles per window from 8 and stops at the maximum."""
    feed = Feed(AdaptiveLimit(maximum=100))
    assert feed.limit.limit == 8
    assert [feed.window(SERVICE) for _ in range(5)] == [16, 32, 64, 100, 100]


def test_initial_limit_never_exceeds_a_small_maximum() -> None:
    """A maximum below the initial 8 is where the run starts."""
    assert AdaptiveLimit(maximum=3).limit == 3


def test_slow_start_ends_at_queueing_and_settles_near_capacity() -> None:
    """Against an API that serves 40 at once (and queues the rest) the limit settles where
    the latency is the tolerated 1.5 times no-load, plus alpha to beta queued: 60 to 60 + beta."""
    feed = Feed(AdaptiveLimit(maximum=512))
    limits = [feed.window(feed.queued_latency(40)) for _ in range(30)]
    assert max(limits) <= 128  # the one overshoot of slow start, never more
    settled = TOLERANCE * 40
    beta = 6 * math.log10(settled)
    assert all(settled <= limit <= settled + beta + 1 for limit in limits[-20:]), limits


def test_queueing_lowers_the_limit_in_proportion() -> None:
    """A window three times as slow as no load (twice the tolerated 1.5) brings 100 down to
    50 plus alpha, in one step."""
    feed = Feed(AdaptiveLimit(maximum=100))
    for _ in range(4):
        feed.window(SERVICE)
    assert feed.limit.limit == 100
    after = feed.window(2 * TOLERANCE * SERVICE)
    assert abs(after - (100 * 0.5 + 3 * math.log10(100))) <= 1  # (rounded down)


def test_a_latency_rise_within_the_tolerance_is_not_a_queue() -> None:
    """Answers up to 1.5 times slower than no-load (a busy event loop) still raise the limit."""
    feed = Feed(AdaptiveLimit(maximum=1000, initial=100))
    feed.window(SERVICE)
    assert feed.window(1.45 * SERVICE) == 400  # slow start goes on


def test_a_queue_within_alpha_and_beta_holds_the_limit() -> None:
    """An estimated queue between alpha and beta changes nothing."""
    feed = Feed(AdaptiveLimit(maximum=100, initial=100))
    feed.window(SERVICE)  # the baseline; slow start cannot grow past the maximum
    # queued = 100 * (1 - 1.5/x) = 9, between alpha = 6 and beta = 12
    latency = _latency_for(9, 100)
    assert [feed.window(latency) for _ in range(3)] == [100, 100, 100]


def test_a_short_queue_raises_the_limit_after_slow_start() -> None:
    """Out of slow start, a queue under log10(limit) adds beta, under alpha adds log10."""
    feed = Feed(AdaptiveLimit(maximum=1000, initial=100))
    feed.window(SERVICE)  # baseline, and slow start doubles to 200
    feed.window(4 * SERVICE)  # a long queue: slow start ends, the limit falls
    low = feed.limit.limit
    assert low < 200
    assert feed.window(SERVICE) == int(low + 6 * math.log10(low))
    current = feed.limit.limit
    # queued = 2.5 log10(current): between log10 and alpha
    log = math.log10(current)
    assert feed.window(_latency_for(2.5 * log, current)) == int(current + log)


def test_a_burst_of_refusals_sets_the_limit_one_below_what_the_api_held() -> None:
    """Slow start doubles to 64 against an API that takes 40: refused with 40 held, the
    limit becomes 39 at once, and doubling stops."""
    feed = Feed(AdaptiveLimit(maximum=512))
    for _ in range(3):
        feed.window(SERVICE)
    assert feed.limit.limit == 64
    assert feed.window(SERVICE, overloaded=24, held=40) == 39
    assert feed.window(SERVICE) <= 40  # not doubled: at most the level the API took


def test_a_stray_refusal_is_not_the_api_limit() -> None:
    """One or two refusals in a window, or under 5% of it (a proxy's 503, a lone timeout),
    change nothing: slow start goes on."""
    feed = Feed(AdaptiveLimit(maximum=512))
    feed.window(SERVICE)
    assert feed.window(SERVICE, overloaded=2, held=3) == 32  # two of 16
    feed.window(SERVICE)
    assert feed.limit.limit == 64
    assert feed.window(SERVICE, overloaded=3, held=3) == 128  # three of 64: under 5%


def test_after_a_refusal_the_limit_stays_at_most_there_until_the_probe_period_passes() -> None:
    """A fifth or more refused, with 63 held: no more than 63 for probe_every seconds, then
    one step past it per window."""
    feed = Feed(AdaptiveLimit(maximum=512, probe_every=30.0))
    for _ in range(3):
        feed.window(SERVICE)
    feed.window(SERVICE, overloaded=13, held=63)
    refused_at = feed.now
    limits = []
    while feed.now < refused_at + 29.9:
        limits.append(feed.window(SERVICE))
    assert max(limits) == 63
    probing = [feed.window(SERVICE) for _ in range(4)]
    assert probing[0] <= 65
    assert [b - a for a, b in itertools.pairwise(probing)] == [1, 1, 1]  # one step per window


def test_a_few_refusals_hold_the_limit_only_a_tenth_as_long() -> None:
    """Under a fifth of a window refused (stray errors cluster too, now and then): the limit
    stays at or under the level for probe_every / 10 seconds only."""
    feed = Feed(AdaptiveLimit(maximum=512, probe_every=30.0))
    for _ in range(3):
        feed.window(SERVICE)
    feed.window(SERVICE, overloaded=8, held=60)
    refused_at = feed.now
    while feed.now < refused_at + 2.9:
        assert feed.window(SERVICE) <= 60
    while feed.now < refused_at + 4.0:
        feed.window(SERVICE)
    assert feed.limit.limit > 60


def test_an_outage_of_timeouts_brings_the_limit_down_to_one() -> None:
    """Every attempt timing out, with none of ours held at the end, is the API taking none:
    the limit goes to 1 (the minimum) and stays there while it lasts."""
    feed = Feed(AdaptiveLimit(maximum=256))
    feed.window(SERVICE)
    limits = [feed.window(None, overloaded=16, held=0) for _ in range(5)]
    assert limits == [1, 1, 1, 1, 1]


def test_after_an_outage_the_limit_climbs_back_as_soon_as_the_api_answers() -> None:
    """A collapse (refused with under half the limit held) sets no ceiling: once answers
    come back clean the limit climbs by beta per window, not after probe_every."""
    feed = Feed(AdaptiveLimit(maximum=64, probe_every=30.0))
    for _ in range(4):
        feed.window(SERVICE)
    outage = [feed.window(None, overloaded=16, held=0) for _ in range(3)]
    assert outage[-1] == 1
    recovery = [feed.window(SERVICE) for _ in range(12)]
    assert feed.now < 5.0
    assert recovery[-1] >= 40


def test_answers_to_attempts_sent_before_a_change_are_ignored() -> None:
    """A refusal of an attempt sent under the old limit does not cut the new one again."""
    feed = Feed(AdaptiveLimit(maximum=512))
    feed.window(SERVICE)
    assert feed.limit.limit == 16
    changed = feed.limit.record(None, overloaded=True, sent_at=feed.now - 1.0, now=feed.now)
    assert changed is False
    assert feed.window(SERVICE) == 32


def test_failures_without_latency_neither_lower_nor_raise_the_limit() -> None:
    """A window of connection errors (no latency, not overload) leaves the limit alone."""
    feed = Feed(AdaptiveLimit(maximum=512))
    feed.window(SERVICE)
    assert feed.window(None, answers=16) == 16


def test_the_baseline_is_remeasured_at_a_quarter_of_the_limit() -> None:
    """Every probe_every seconds one window runs at limit // 4; its mean becomes the no-load
    latency, so an API that got slower for good is not read as a queue for ever."""
    feed = Feed(AdaptiveLimit(maximum=64, probe_every=5.0))
    for _ in range(4):
        feed.window(SERVICE)
    assert feed.limit.limit == 64
    feed.window(SERVICE, overloaded=8, held=64)  # out of slow start (probes wait for that)
    before = feed.limit.limit
    while feed.now < 5.0:
        before = feed.limit.limit
        feed.window(SERVICE)
    assert feed.limit.limit <= before // 4 + 1  # the probe window
    feed.window(2 * SERVICE)  # the API is now twice as slow, with nothing queued
    assert feed.limit.no_load_latency == pytest.approx(2 * SERVICE)
    assert feed.limit.limit == before  # back to where it was before the probe


def test_a_slower_api_is_not_read_as_a_queue_for_long() -> None:
    """The API gets twice as slow for good: the limit falls for two windows in which the
    latency does not improve, then the baseline is probed at once (not after probe_every)
    and the limit climbs back."""
    feed = Feed(AdaptiveLimit(maximum=64, probe_every=30.0))
    for _ in range(4):
        feed.window(SERVICE)
    feed.window(SERVICE, overloaded=8, held=64)  # out of slow start
    for _ in range(5):
        feed.window(SERVICE)
    high = feed.limit.limit
    limits = [feed.window(2 * SERVICE) for _ in range(12)]
    assert feed.now < 10.0
    assert feed.limit.no_load_latency == pytest.approx(2 * SERVICE)
    assert min(limits) < high / 2  # it did lower the limit at first
    assert limits[-1] >= high - 1  # and took it back once the baseline was re-measured


@pytest.mark.parametrize(
    ("error", "overload"),
    [
        (RateLimitError("429", status=429, code=None, body=""), True),
        (ServerError("503", status=503, code=None, body=""), True),
        (ServerError("504", status=504, code=None, body=""), True),
        (ServerError("500", status=500, code=None, body=""), False),
        (EngineError("502", status=502, code=None, body=""), False),
        (NotFoundError("404", status=404, code=None, body=""), False),
        (APITimeoutError("timed out", request_sent=True), True),
        (APIConnectionError("refused", request_sent=False), False),
    ],
)
def test_which_failures_say_the_api_is_overloaded(error: Exception, overload: bool) -> None:
    """429, 503, 504 and timeouts are load signals; other failures are not."""
    assert is_overload(error) is overload  # type: ignore[arg-type]


def test_attempt_ended_learns_latency_from_successes_only() -> None:
    """A quick connection error is no latency sample: it would make no-load look faster."""
    clock = [0.0]
    adaptive = AdaptiveConcurrency(64, clock=lambda: clock[0])
    for _ in range(8):
        assert adaptive.slots.try_take()
    clock[0] = 0.001
    for _ in range(8):
        adaptive.attempt_ended(0.0, APIConnectionError("refused", request_sent=False))
    assert adaptive.limit == 8
    assert adaptive.slots.held == 0
    for _ in range(8):
        assert adaptive.slots.try_take()
    clock[0] = 0.051
    for _ in range(8):
        adaptive.attempt_ended(0.001, None)
    assert adaptive.limit == 16
    assert adaptive.slots.limit == 16
    assert adaptive._limit.no_load_latency == pytest.approx(0.05)


def test_attempt_ended_cuts_the_slots_to_what_the_api_held_at_a_refusal() -> None:
    """429s while 5 other attempts are on the wire: the API takes 5, the slots become 4."""
    clock = [0.0]
    adaptive = AdaptiveConcurrency(64, clock=lambda: clock[0])
    for _ in range(8):
        adaptive.slots.try_take()
    clock[0] = 0.01
    for _ in range(3):
        adaptive.attempt_ended(0.0, RateLimitError("429", status=429, code=None, body=""))
    assert adaptive.slots.held == 5
    for _ in range(5):
        adaptive.slots.try_take()  # five more attempts go out and come back refused
        adaptive.attempt_ended(0.0, ServerError("503", status=503, code=None, body=""))
    assert adaptive.limit == 4
    assert adaptive.slots.limit == 4


async def test_slots_hand_a_freed_slot_to_the_oldest_waiter() -> None:
    """First come, first served; a newcomer cannot take a slot while others wait."""
    slots = ConcurrencySlots(1)
    assert slots.try_take()
    order: list[int] = []

    async def waiter(number: int) -> None:
        await slots.take()
        order.append(number)

    tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
    await asyncio.sleep(0)
    slots.give_back()
    assert not slots.try_take()  # the slot went to waiter 0, not to a newcomer
    for _ in range(3):
        await asyncio.sleep(0)
        slots.give_back()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert slots.held == 0


async def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on() -> None:
    """The cancel and the hand-off land in the same loop step: no slot is lost."""
    slots = ConcurrencySlots(1)
    slots.try_take()
    first = asyncio.create_task(slots.take())
    second = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.give_back()  # handed to `first`, which has not run yet
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await second  # got the slot `first` gave back
    assert slots.held == 1


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    """A cancelled wait holds nothing and lets try_take succeed again."""
    slots = ConcurrencySlots(1)
    slots.try_take()
    waiter = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    slots.give_back()
    assert slots.try_take()


async def test_a_lower_limit_lets_holders_finish_and_a_higher_one_serves_waiters() -> None:
    """Holders above a lowered limit keep their slots; a freed slot goes to a waiter only
    while the limit allows, and a raised limit serves several at the next give-back."""
    slots = ConcurrencySlots(3)
    for _ in range(3):
        assert slots.try_take()
    waiters = [asyncio.create_task(slots.take()) for _ in range(3)]
    await asyncio.sleep(0)
    slots.limit = 1
    slots.give_back()
    slots.give_back()
    assert slots.held == 1
    assert not any(waiter.done() for waiter in waiters)
    slots.limit = 4
    slots.give_back()  # 0 held: three waiters fit under 4
    await asyncio.gather(*waiters)
    assert slots.held == 3
