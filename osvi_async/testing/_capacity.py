"""CapacityModel: an API that serves at most N requests at once, queues a few, refuses the rest.

Adaptive clients (``inject_many(concurrency="auto")``) need a server whose capacity they can
discover: more requests at once than it serves only wait longer, and beyond its queue they are
refused. ``CapacityModel`` is the frozen plan; ``CapacityGate`` is the state that runs it, owned
by the emulator (a fresh one each time a model is assigned), so the plan holds no clock, queue
or random generator.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import Iterable
from typing import Any, Final, Literal

import attrs

from osvi_async.testing._faults import ENDPOINT_NAMES

__all__ = ["Admission", "CapacityGate", "CapacityModel", "CapacitySecond", "CapacityStats"]

REFUSAL_STATUSES: Final = (429, 503)
"""429: the API's JSON ``rate_limited`` error; 503: the reverse proxy's HTML page."""

Admission = Literal["admitted", "refused", "closed"]
"""What the gate did with a request: a slot, a refusal, or none because the emulator stops."""


def _is_int_at_least(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_seconds(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


def _check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Every field's range, with a message that names the field and the rule."""
    name = attribute.name
    rules: dict[str, tuple[bool, str]] = {
        "limit": (_is_int_at_least(value, 1), "an integer >= 1"),
        "service_time": (_is_seconds(value) and value > 0, "a finite number of seconds > 0"),
        "jitter": (isinstance(value, int | float) and 0 <= value < 1, "within [0, 1)"),
        "queue_limit": (_is_int_at_least(value, 0), "an integer >= 0"),
        "refusal_status": (value in REFUSAL_STATUSES, "429 or 503"),
        "retry_after": (value is None or _is_int_at_least(value, 0), "None or an integer >= 0"),
    }
    valid, rule = rules[name]
    if not valid:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def _to_schedule(value: Iterable[tuple[float, int]]) -> tuple[tuple[float, int], ...]:
    return tuple((step[0], step[1]) for step in value)


def _check_schedule(
    instance: object,
    attribute: attrs.Attribute[tuple[tuple[float, int], ...]],
    value: tuple[tuple[float, int], ...],
) -> None:
    previous: float | None = None
    for at, limit in value:
        if not _is_seconds(at) or (previous is not None and at <= previous):
            raise ValueError(
                f"schedule times must be finite seconds >= 0 in ascending order, got {value!r}"
            )
        if not _is_int_at_least(limit, 1):
            raise ValueError(f"schedule limits must be integers >= 1, got {value!r}")
        previous = at


def _to_endpoints(value: Iterable[str]) -> frozenset[str]:
    return frozenset({value}) if isinstance(value, str) else frozenset(value)


def _check_endpoints(
    instance: object, attribute: attrs.Attribute[frozenset[str]], value: frozenset[str]
) -> None:
    unknown = sorted(value - set(ENDPOINT_NAMES))
    if unknown or not value:
        names = ", ".join(ENDPOINT_NAMES)
        raise ValueError(f"endpoints must be a non-empty set of: {names}; got {sorted(value)!r}")


@attrs.frozen(kw_only=True)
class CapacityModel:
    """How much the emulated API serves at once (see docs/testing.md, "Capacity model").

    Attributes:
        limit: Requests served at once (>= 1).
        service_time: Seconds each request is served (> 0), holding its slot.
        jitter: In [0, 1): each service time is uniform in ``service_time * [1-j, 1+j]``.
        queue_limit: Requests that may wait (FIFO) for a slot (>= 0); beyond it, refused.
        refusal_status: 429 (the API's ``rate_limited`` JSON) or 503 (the proxy's HTML page).
        retry_after: ``Retry-After`` seconds on refusals; None sends no header.
        schedule: ``(seconds after the model's first request, new limit)`` steps, ascending.
        endpoints: The endpoints the model covers (names from ``ENDPOINT_NAMES``).
        seed: Seed of the jitter's random draws.

    Raises:
        ValueError: A field is out of range.
    """

    limit: int = attrs.field(validator=_check)
    service_time: float = attrs.field(default=0.05, validator=_check)
    jitter: float = attrs.field(default=0.0, validator=_check)
    queue_limit: int = attrs.field(default=0, validator=_check)
    refusal_status: int = attrs.field(default=429, validator=_check)
    retry_after: int | None = attrs.field(default=1, validator=_check)
    schedule: tuple[tuple[float, int], ...] = attrs.field(
        default=(), converter=_to_schedule, validator=_check_schedule
    )
    endpoints: frozenset[str] = attrs.field(
        default=frozenset({"inject_context"}), converter=_to_endpoints, validator=_check_endpoints
    )
    seed: int = 0

    def limit_at(self, seconds: float) -> int:
        """The limit ``seconds`` after the model's first request, following the schedule."""
        limit = self.limit
        for at, scheduled in self.schedule:
            if at > seconds:
                break
            limit = scheduled
        return limit


@attrs.frozen(kw_only=True)
class CapacitySecond:
    """One whole second of a capacity model's life (second 0 starts at its first request).

    Attributes:
        second: Seconds since the first request, rounded down.
        served: Requests that got a slot during this second.
        refused: Requests refused during this second.
        peak_concurrent: Most requests in service plus waiting at once during this second.
        limit: The limit at the end of this second.
    """

    second: int
    served: int
    refused: int
    peak_concurrent: int
    limit: int


@attrs.frozen(kw_only=True)
class CapacityStats:
    """What a capacity model did since it was assigned (zeros before its first request).

    Attributes:
        served: Requests that got through the gate (a slot, then their service time).
        refused: Requests refused because the queue was full.
        peak_in_service: Most requests in service at once.
        peak_waiting: Most requests waiting at once.
        peak_concurrent: Most requests in service plus waiting at once.
        limit: The limit now (0 without a model).
        timeline: One entry per whole second since the first request.
    """

    served: int = 0
    refused: int = 0
    peak_in_service: int = 0
    peak_waiting: int = 0
    peak_concurrent: int = 0
    limit: int = 0
    timeline: tuple[CapacitySecond, ...] = ()


@attrs.define
class _Second:
    served: int = 0
    refused: int = 0
    peak: int = 0
    last: int = 0  # requests in service plus waiting when the second's last event happened


class CapacityGate:
    """Runs one ``CapacityModel``: slots, the FIFO queue, refusals, the schedule and the stats.

    Its clock is the event loop's (``loop.time()``), started by the first request, so schedule
    steps are timers on the same clock that wake waiters the moment the limit rises.
    """

    def __init__(self, model: CapacityModel) -> None:
        self.model = model
        self._random = random.Random(model.seed)  # noqa: S311 - reproducible jitter, not crypto
        self._limit = model.limit
        self._in_service = 0
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._started: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._closed = False
        self._served = self._refused = 0
        self._peaks = [0, 0, 0]  # in service, waiting, concurrent
        self._concurrent = 0  # in service plus waiting, as of the last event
        self._seconds: dict[int, _Second] = {}

    def covers(self, endpoint: str) -> bool:
        """Whether requests to ``endpoint`` go through this gate."""
        return endpoint in self.model.endpoints

    def service_seconds(self) -> float:
        """Draw one service time, jittered from the model's seeded generator."""
        spread = self.model.service_time * self.model.jitter
        return self._random.uniform(
            self.model.service_time - spread, self.model.service_time + spread
        )

    async def acquire(self) -> Admission:
        """Take a slot, waiting in FIFO order when all are taken; refuse when the queue is full.

        Cancellation-safe: a waiter cancelled after being handed a slot gives it back.
        """
        if self._closed:
            return "closed"
        self._start()
        self._hand_over()  # a schedule step due now counts even if its timer has not run yet
        if self._in_service < self._limit and not self._waiters:
            self._in_service += 1
            self._served += 1
            self._note(served=1)
            return "admitted"
        if len(self._waiters) >= self.model.queue_limit:
            self._refused += 1
            self._note(refused=1)
            return "refused"
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._note()
        try:
            admitted = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()  # handed a slot just before the cancellation: give it back
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
                self._note()
            raise
        return "admitted" if admitted else "closed"

    def release(self) -> None:
        """Leave service; the slot goes to the first waiter if the limit allows."""
        self._in_service -= 1
        self._hand_over()

    def close(self) -> None:
        """Release every waiter as "closed" and stop the schedule: the emulator is stopping."""
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(False)

    def stats(self) -> CapacityStats:
        """A snapshot of the counters, peaks and the per-second timeline."""
        if self._started is None:
            return CapacityStats(limit=self._limit)
        elapsed = self._clock() - self._started
        timeline: list[CapacitySecond] = []
        carried = 0
        for second in range(int(elapsed) + 1):
            entry = self._seconds.get(second, _Second(peak=carried, last=carried))
            carried = entry.last
            end = min(second + 1 - 1e-9, elapsed)  # the current second ends now
            timeline.append(
                CapacitySecond(
                    second=second,
                    served=entry.served,
                    refused=entry.refused,
                    peak_concurrent=entry.peak,
                    limit=self.model.limit_at(end),
                )
            )
        in_service, waiting, concurrent = self._peaks
        return CapacityStats(
            served=self._served,
            refused=self._refused,
            peak_in_service=in_service,
            peak_waiting=waiting,
            peak_concurrent=concurrent,
            limit=self._limit,
            timeline=tuple(timeline),
        )

    def _start(self) -> None:
        """Start the model's clock at its first request and arm a timer per schedule step."""
        if self._started is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        self._started = loop.time()
        for at, _ in self.model.schedule:
            self._timers.append(loop.call_at(self._started + at, self._hand_over))

    def _hand_over(self) -> None:
        """Refresh the limit from the schedule and start waiters while slots are free."""
        if self._started is not None:
            self._limit = self.model.limit_at(self._clock() - self._started)
        while self._waiters and self._in_service < self._limit:
            waiter = self._waiters.popleft()
            if waiter.done():  # cancelled; its task removes nothing more
                continue
            self._in_service += 1
            self._served += 1
            waiter.set_result(True)
            self._note(served=1)
        self._note()

    def _clock(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _note(self, *, served: int = 0, refused: int = 0) -> None:
        """Record an event in the current second and in the peaks."""
        if self._started is None:
            return
        waiting = len(self._waiters)
        concurrent = self._in_service + waiting
        self._peaks = [
            max(self._peaks[0], self._in_service),
            max(self._peaks[1], waiting),
            max(self._peaks[2], concurrent),
        ]
        second = int(self._clock() - self._started)
        entry = self._seconds.get(second)
        if entry is None:  # a new second starts with what was there when the last one ended
            entry = self._seconds[second] = _Second(peak=self._concurrent)
        entry.served += served
        entry.refused += refused
        entry.peak = max(entry.peak, concurrent)
        entry.last = self._concurrent = concurrent
