"""Adaptive concurrency for bulk runs: how many inject attempts may be in flight at once.

`inject_many(concurrency="auto")` does not know how many requests the API serves at once for
this account, so it learns it, the way TCP Vegas learns a path's capacity: a server with spare
capacity answers in its *no-load* time; once more requests arrive than it serves, they queue
and every answer takes longer. The controller compares each window's mean latency with the
no-load latency and reads the difference as requests queued at the server:

    queued = limit * (1 - 1.5 * no_load / latency)

(a rise up to 1.5 times no-load is tolerated, as Netflix's Gradient2 does: a busy event loop,
the client's or the API's, slows answers too, and more in flight still raises throughput
there) and keeps that between `alpha` and `beta` (3 and 6 times log10 of the limit, at least
3 and 6: Netflix concurrency-limits' Vegas thresholds): fewer queued and the API has room (raise the
limit), more and requests only wait longer (lower it, in proportion, to what the latency says
the API serves, plus `alpha`).

An API that refuses before it queues (429, 503, 504) or stops answering (timeouts) gives no
latency warning, so refusals are a signal of their own. When one comes back, the number of our
other attempts still on the wire is about what the API holds at once: the limit goes one below
that and stays at or under it for `probe_every` seconds, then may pass it by one per window
(CUBIC's "remember where the last loss happened"). A stray refusal is not a limit: fewer than
3 in a window, or under 5% of it, are ignored, unless they come at a level where the API
refused before. Without that, a proxy's occasional 503 ratchets the limit down to nothing.

Why not Gradient2 or AIMD alone: AIMD on refusals finds the limit only by being refused, about
once per cycle for ever; a gradient on a long-term latency average drifts up with the queue it
tolerates. Vegas's no-load baseline does not drift, provided it is re-measured: every
`probe_every` seconds one window runs at a quarter of the limit and its mean becomes the
baseline (Envoy's adaptive concurrency filter does the same), which costs about one round trip
at reduced concurrency per period and lets the baseline follow an API that got slower for good.

Decisions are made once per *window*: as many answers as the limit allowed in flight (at least
`_MIN_WINDOW`), roughly one round trip. Answers to attempts sent before the last change are
ignored: they measured the old limit. A run starts in slow start, doubling each window until
the first sign of queueing or refusal.

`AdaptiveLimit` is pure arithmetic on (latency, overloaded, time) samples, so its decisions are
tested on synthetic sequences; `ConcurrencySlots` is the asyncio side, the slots attempts take.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from osvi_async.errors import (
    APITimeoutError,
    OsviError,
    RateLimitError,
    ServerError,
)

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "AdaptiveConcurrency",
    "AdaptiveLimit",
    "ConcurrencySlots",
    "is_overload",
]

DEFAULT_MAX_CONCURRENCY: Final = 256
INITIAL_LIMIT: Final = 8
_MIN_WINDOW: Final = 8  # answers per decision at the least: fewer are mostly noise
# Fewer refusals than this in a window, or a smaller share of it, may be stray errors (a
# proxy's 503, one timeout) rather than the API's limit: they are ignored.
_STRAY_REFUSALS: Final = 3
_STRAY_SHARE: Final = 0.05
_STRONG_SHARE: Final = 0.2
# Latency up to this multiple of no-load is not read as a queue: a busy client's or server's
# event loop slows answers too, and more in flight still raises throughput there
# (Gradient2's default rttTolerance in Netflix concurrency-limits).
_TOLERANCE: Final = 1.5
_PROBE_FRACTION: Final = 4  # a baseline probe runs at limit // this
_OVERLOAD_STATUSES: Final = frozenset({429, 503, 504})


def is_overload(error: OsviError) -> bool:
    """Whether an attempt's failure says the API has more requests than it can take."""
    if isinstance(error, APITimeoutError):
        return True
    return isinstance(error, RateLimitError | ServerError) and error.status in _OVERLOAD_STATUSES


class AdaptiveLimit:
    """The limit, decided from the answers of the attempts it let through.

    Feed it every finished attempt with `record`; read `limit`. No clock of its own: times are
    passed in, so the same sequence of samples always gives the same limits.
    """

    __slots__ = (
        "_answered",
        "_ceiling",
        "_ceiling_until",
        "_changed_at",
        "_count",
        "_lowered_at_mean",
        "_maximum",
        "_minimum",
        "_next_probe",
        "_no_load",
        "_not_faster",
        "_overloaded",
        "_probe_every",
        "_probing",
        "_slow_start",
        "_taken",
        "_total",
        "limit",
    )

    def __init__(
        self,
        *,
        maximum: int,
        initial: int = INITIAL_LIMIT,
        minimum: int = 1,
        probe_every: float = 30.0,
        now: float = 0.0,
    ) -> None:
        self._minimum = minimum
        self._maximum = maximum
        self.limit = max(minimum, min(initial, maximum))
        self._probe_every = probe_every
        self._next_probe = now + probe_every
        self._no_load = math.inf  # the lowest window mean since the last probe
        self._slow_start = True
        self._probing: int | None = None  # the limit to go back to after a probe window
        # Below the limit the API last refused at: raises stop there until `_ceiling_until`,
        # then go past it one step per window (an API that refuses before it queues gives
        # no other warning).
        self._ceiling = math.inf
        self._ceiling_until = now
        # The latency when the limit was last lowered for a queue, and how many lowerings in
        # a row did not make it faster (a stale baseline, see `_notice_stale_baseline`).
        self._lowered_at_mean: float | None = None
        self._not_faster = 0
        self._changed_at = now
        self._count = 0  # answers in this window
        self._answered = 0  # of them, those not refused for load
        self._total = 0.0  # their latencies' sum
        self._overloaded = 0  # of them, refused for load or timed out
        self._taken = math.inf  # the fewest others on the wire when one was refused

    @property
    def no_load_latency(self) -> float:
        """The latency the API answers in without a queue, as last measured; inf before."""
        return self._no_load

    def record(
        self,
        latency: float | None,
        *,
        overloaded: bool,
        sent_at: float,
        now: float,
        in_flight: int = 0,
    ) -> bool:
        """Learn from one finished attempt; True when the limit changed.

        `latency` is None for an attempt whose time says nothing about the API's queue: a
        refusal or a connection error comes back at once, and counting it would make the
        no-load baseline look faster than the API is. `sent_at` tells answers to attempts sent
        under an earlier limit, which are ignored. `in_flight` is how many other attempts
        were still on the wire when this one ended: for a refusal, about how many the API
        was holding, i.e. what it takes at once.
        """
        if sent_at < self._changed_at:
            return False
        if overloaded:
            self._overloaded += 1
            self._taken = min(self._taken, in_flight)
        elif latency is not None:
            self._answered += 1
            self._total += latency
        self._count += 1
        if self._count < max(self.limit, _MIN_WINDOW):
            return False
        mean = self._total / self._answered if self._answered else 0.0
        refused, count, taken = self._overloaded, self._count, self._taken
        self._count = self._answered = self._overloaded = 0
        self._total, self._taken = 0.0, math.inf
        return self._decide(mean, refused, count, taken, now)

    def _decide(self, mean: float, refused: int, count: int, taken: float, now: float) -> bool:
        previous = self.limit
        if self._probing is not None:
            # The probe window ran at a quarter of the limit, with no queue: its mean is the
            # baseline from now on, and the limit goes back to what it was.
            if not refused and mean > 0:
                self._no_load = mean
            limit = float(self._probing)
            self._probing = None
        elif refused >= _STRAY_REFUSALS and refused >= _STRAY_SHARE * count:
            # The API's limit: it was holding at most `taken` of ours when it refused one
            # (fewer if other refusals were still on their way back). Stay at or under that
            # for a while, and go below it by at least half the share refused.
            # - The while is long (probe_every) only for an API that refuses without first
            #   queueing (no latency warning: only refusals find its limit) and for a strong
            #   burst (a fifth of the window or more: stray errors cluster too, now and then).
            #   Otherwise the latency signal guards the level, and the while is a tenth.
            # - A collapse to under half the limit is an outage, not a limit: no ceiling, so
            #   the limit climbs back as soon as the API answers again.
            share = refused / count
            self._slow_start = False
            if taken >= previous / 2:
                warned = mean > 0 and self._queued(previous, mean) >= _thresholds(previous)[1]
                strong = share >= _STRONG_SHARE and not warned
                self._ceiling = max(self._minimum, int(taken))
                self._ceiling_until = now + self._probe_every / (1 if strong else 10)
            limit = min(taken - 1, previous * (1.0 - share / 2))
        elif mean <= 0:
            return False
        else:
            self._no_load = min(self._no_load, mean)
            limit = self._next_limit(previous, mean)
            self._notice_stale_baseline(limit < previous, mean, now)
            if limit > self._ceiling:
                if now >= self._ceiling_until:
                    self._ceiling += 1
                limit = min(limit, self._ceiling)
            if now >= self._next_probe and not self._slow_start:
                self._next_probe = now + self._probe_every
                self._probing = self._clamp(limit)
                limit = self._probing / _PROBE_FRACTION
        self.limit = self._clamp(limit)
        self._changed_at = now
        return self.limit != previous

    def _notice_stale_baseline(self, lowered: bool, mean: float, now: float) -> None:
        """Probe the baseline now if lowering the limit twice in a row did not bring the
        latency down: then it is not a queue, the API got slower (a queue shrinks as the
        limit falls). Otherwise the limit would stay low until the next periodic probe."""
        if not lowered:
            self._lowered_at_mean = None
            self._not_faster = 0
            return
        if self._lowered_at_mean is not None and mean >= 0.9 * self._lowered_at_mean:
            self._not_faster += 1
            if self._not_faster >= 2:
                self._next_probe = now
                self._not_faster = 0
        self._lowered_at_mean = mean

    def _queued(self, limit: int, mean: float) -> float:
        """Requests the latency says wait at the API, beyond the rise it tolerates."""
        return limit * (1.0 - _TOLERANCE * self._no_load / mean)

    def _next_limit(self, limit: int, mean: float) -> float:
        """Vegas: hold the estimated queue at the API between alpha and beta."""
        queued = self._queued(limit, mean)
        log, alpha, beta = _thresholds(limit)
        if self._slow_start:
            if queued <= beta:
                return 2.0 * limit
            self._slow_start = False
        if queued <= log:
            return limit + beta
        if queued < alpha:
            return limit + log
        if queued > beta:
            # What the latency says the API serves at once, plus a small queue to keep it busy.
            return max(limit / 2, limit * _TOLERANCE * self._no_load / mean + alpha)
        return limit

    def _clamp(self, limit: float) -> int:
        return max(self._minimum, min(self._maximum, int(limit)))


def _thresholds(limit: int) -> tuple[float, float, float]:
    """log10 of the limit (at least 1), and Vegas's alpha and beta: 3 and 6 times that."""
    log = max(1.0, math.log10(limit))
    return log, 3 * log, 6 * log


class ConcurrencySlots:
    """At most `limit` holders at once; waiters are served first come, first served.

    A slot that frees up goes straight to the oldest waiter, so an attempt that just finished
    cannot take it back for its next item while others wait (which would starve them).
    """

    __slots__ = ("_held", "_waiters", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def held(self) -> int:
        """Slots taken now."""
        return self._held

    def try_take(self) -> bool:
        """Take a slot if one is free and nobody waits for one; no await."""
        if self._held < self.limit and not self._waiters:
            self._held += 1
            return True
        return False

    async def take(self) -> None:
        """Wait for a slot and take it. A cancelled wait holds no slot."""
        if self.try_take():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give_back()  # handed a slot just as the cancel came: pass it on
            else:
                with contextlib.suppress(ValueError):  # (already dropped by `_serve`)
                    self._waiters.remove(waiter)
            raise

    def give_back(self) -> None:
        """Free a slot: hand it to the oldest waiter if the limit allows."""
        self._held -= 1
        self._serve()

    def _serve(self) -> None:
        waiters = self._waiters
        while waiters and self._held < self.limit:
            waiter = waiters.popleft()
            if not waiter.done():
                self._held += 1
                waiter.set_result(None)


class AdaptiveConcurrency:
    """A run's slots with the limit that sizes them: what each attempt of an auto run takes
    before it goes out and gives back when it ends."""

    __slots__ = ("_limit", "_on_change", "clock", "slots")

    def __init__(
        self,
        maximum: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.clock = clock  # what attempts are stamped with as they go out, and learnt on
        self._on_change = on_change
        self._limit = AdaptiveLimit(maximum=maximum, now=clock())
        self.slots = ConcurrencySlots(self._limit.limit)

    @property
    def limit(self) -> int:
        """The number of attempts allowed in flight now."""
        return self._limit.limit

    def attempt_ended(self, sent_at: float, error: OsviError | None) -> None:
        """Give the slot back and learn from the attempt: a success's latency, or whether its
        failure was a refusal for load or a timeout. Other failures teach nothing: an error
        answer may skip the work a success queues for."""
        # Learn first, then free the slot: a waiter handed it under the old limit must not
        # count as sent under the new one.
        now = self.clock()
        if error is None:
            changed = self._limit.record(now - sent_at, overloaded=False, sent_at=sent_at, now=now)
        else:
            changed = self._limit.record(
                None,
                overloaded=is_overload(error),
                sent_at=sent_at,
                now=now,
                in_flight=self.slots.held - 1,
            )
        if changed:
            self.slots.limit = self._limit.limit
            if self._on_change is not None:
                self._on_change(self._limit.limit)
        self.slots.give_back()  # (also serves waiters up to a raised limit)
