"""FaultPlan: which failures the emulator injects, decided deterministically from a seed.

The plan only *decides*; the application (``_app.py``) *applies* each decision at the stage of
request handling where such a failure really happens. Keeping the decision separate makes the
sequence of faults a function of the seed and the order of calls, so a test that fails once
fails again with the same seed.
"""

from __future__ import annotations

import enum
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

import attrs

__all__ = ["FaultDecision", "FaultKind", "FaultPlan", "ManualClock"]


class FaultKind(enum.StrEnum):
    """A failure the emulator can inject; the values are the names used in scripts and stats.

    Whether the context entry is applied (visible in ``OsviEmulator.applied``) is what a client
    needs to know to decide whether a retry may duplicate it, so each kind states it.
    """

    ENGINE_ERROR = "engine_error"
    """502 JSON ``Python engine unreachable``, ``upstream_body: null``; not applied."""
    ENGINE_REJECTED = "engine_rejected"
    """502 JSON ``Python engine returned 422 ...``, a ``rejected`` upstream body; not applied."""
    PROXY_HTML_502 = "proxy_html_502"
    """502 with an HTML body from the reverse proxy, before authentication; not applied."""
    UNAVAILABLE = "unavailable"
    """503 with an HTML body from the reverse proxy, before authentication; not applied."""
    GATEWAY_TIMEOUT = "gateway_timeout"
    """504 with an HTML body from the reverse proxy, before authentication; not applied."""
    RATE_LIMITED = "rate_limited"
    """429 with a ``Retry-After`` header, after authentication; not applied."""
    LATENCY = "latency"
    """A delay before handling, then a normal answer."""
    AMBIGUOUS_DROP = "ambiguous_drop"
    """The entry IS applied, then the connection is closed without a response."""
    AMBIGUOUS_502 = "ambiguous_502"
    """The entry IS applied, then a 502 ``Python engine returned 500 ...`` is returned."""
    HANG = "hang"
    """The request is read and never answered, until the client gives up; not applied."""


# The order in which the rates are laid out on [0, 1). Fixed, so a seed means the same thing
# in every release; new kinds go at the end.
_OUTCOME_ORDER: Final = (
    FaultKind.ENGINE_ERROR,
    FaultKind.ENGINE_REJECTED,
    FaultKind.PROXY_HTML_502,
    FaultKind.UNAVAILABLE,
    FaultKind.GATEWAY_TIMEOUT,
    FaultKind.RATE_LIMITED,
    FaultKind.AMBIGUOUS_DROP,
    FaultKind.AMBIGUOUS_502,
    FaultKind.HANG,
)


class ManualClock:
    """A monotonic clock that moves only when told, for ``FaultPlan(clock=...)``.

    Lets a test cross the end of an outage window without sleeping.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (must be >= 0: the clock is monotonic)."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back, got {seconds!r}")
        self.now += seconds


@attrs.frozen
class FaultDecision:
    """What the emulator does to one request.

    Attributes:
        kind: The failure to answer with, or None for a normal answer.
        delay_seconds: Seconds to wait before handling the request (0.0 for none).
    """

    kind: FaultKind | None = None
    delay_seconds: float = 0.0


def _check_rate(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be within [0, 1], got {value!r}")


def _to_latency_range(value: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(value, tuple):
        low, high = value
        return (float(low), float(high))
    return (float(value), float(value))


def _check_latency(
    instance: object, attribute: attrs.Attribute[tuple[float, float]], value: tuple[float, float]
) -> None:
    low, high = value
    if not 0.0 <= low <= high:
        raise ValueError(f"latency_seconds must satisfy 0 <= min <= max, got {value!r}")


def _check_retry_after(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"retry_after_seconds must be >= 0, got {value!r}")


@attrs.define
class _Schedule:
    """The parts of a plan that tests change while the emulator runs."""

    scripts: dict[str, deque[FaultKind | None]] = attrs.field(factory=dict)
    outage_until: float | None = None
    outage_kind: FaultKind = FaultKind.ENGINE_ERROR


@attrs.frozen(kw_only=True)
class FaultPlan:
    """Failures to inject into emulator requests, reproducible from ``seed``.

    Each rate is the probability, in [0, 1], that one request gets that failure; the failure
    rates are mutually exclusive and must sum to at most 1. ``latency`` is drawn independently
    and delays a request before any other handling. By default only ``inject_context`` requests
    are affected; set ``all_endpoints=True`` to affect every endpoint.

    Every request draws the same amount of randomness, so with a fixed ``seed`` the n-th request
    the emulator receives always gets the same decision. Scripted faults (``script``) take
    precedence over an outage window (``outage``), which takes precedence over the rates.

    The rates are fixed once built; to change them, assign a new plan to
    ``OsviEmulator.fault_plan``. Scripts and outages can be added to a plan in use.

    Attributes:
        seed: Seed of the plan's random generator. Fixed by default so a test with rates
            fails the same way on every run; None draws one from the OS (not repeatable).
        engine_error: Rate of ``FaultKind.ENGINE_ERROR``.
        engine_rejected: Rate of ``FaultKind.ENGINE_REJECTED``.
        proxy_html_502: Rate of ``FaultKind.PROXY_HTML_502``.
        unavailable: Rate of ``FaultKind.UNAVAILABLE``.
        gateway_timeout: Rate of ``FaultKind.GATEWAY_TIMEOUT``.
        rate_limited: Rate of ``FaultKind.RATE_LIMITED``.
        ambiguous_drop: Rate of ``FaultKind.AMBIGUOUS_DROP``.
        ambiguous_502: Rate of ``FaultKind.AMBIGUOUS_502``.
        hang: Rate of ``FaultKind.HANG``.
        latency: Rate of ``FaultKind.LATENCY``, drawn independently of the failures.
        latency_seconds: The delay in seconds: a number for a fixed delay, or ``(min, max)``
            for a uniformly random one.
        retry_after_seconds: Value of the ``Retry-After`` header on 429 answers.
        rejected_reason: ``upstream_body.reason`` on ``engine_rejected`` answers.
        all_endpoints: Apply the plan to every endpoint, not only ``inject_context``.
        clock: Monotonic clock in seconds used for outage windows; inject a fake one in tests.
    """

    seed: int | None = 0
    engine_error: float = attrs.field(default=0.0, validator=_check_rate)
    engine_rejected: float = attrs.field(default=0.0, validator=_check_rate)
    proxy_html_502: float = attrs.field(default=0.0, validator=_check_rate)
    unavailable: float = attrs.field(default=0.0, validator=_check_rate)
    gateway_timeout: float = attrs.field(default=0.0, validator=_check_rate)
    rate_limited: float = attrs.field(default=0.0, validator=_check_rate)
    ambiguous_drop: float = attrs.field(default=0.0, validator=_check_rate)
    ambiguous_502: float = attrs.field(default=0.0, validator=_check_rate)
    hang: float = attrs.field(default=0.0, validator=_check_rate)
    latency: float = attrs.field(default=0.0, validator=_check_rate)
    latency_seconds: tuple[float, float] = attrs.field(
        default=(0.05, 0.05), converter=_to_latency_range, validator=_check_latency
    )
    retry_after_seconds: int = attrs.field(default=1, validator=_check_retry_after)
    rejected_reason: str = "context_rejected"
    all_endpoints: bool = False
    clock: Callable[[], float] = attrs.field(default=time.monotonic, repr=False)
    _random: random.Random = attrs.field(init=False, repr=False, eq=False)
    _schedule: _Schedule = attrs.field(init=False, repr=False, eq=False, factory=_Schedule)

    @_random.default
    def _seeded_random(self) -> random.Random:
        return random.Random(self.seed)  # noqa: S311 - reproducible test faults, not crypto

    def __attrs_post_init__(self) -> None:
        total = sum(self.rate_of(kind) for kind in _OUTCOME_ORDER)
        # A little slack for float sums such as 0.1 + 0.2 + 0.7.
        if total > 1.0 + 1e-9:
            raise ValueError(f"failure rates must sum to at most 1, got {total!r}")

    def rate_of(self, kind: FaultKind | str) -> float:
        """Return the configured rate of ``kind``."""
        return float(getattr(self, FaultKind(kind).value))

    def script(self, session_id: str, kinds: Iterable[FaultKind | str | None]) -> None:
        """Make the next calls for ``session_id`` take these faults, in order, then behave normally.

        ``None`` in ``kinds`` means one normal answer. Appends to any script already queued for
        the session. Only requests the plan applies to (see ``all_endpoints``) consume entries.
        """
        entries = [None if kind is None else FaultKind(kind) for kind in kinds]
        self._schedule.scripts.setdefault(session_id, deque()).extend(entries)

    def outage(self, seconds: float, kind: FaultKind | str = FaultKind.ENGINE_ERROR) -> None:
        """Make every call get ``kind`` from now (by ``clock``) for ``seconds``, then recover.

        A new outage replaces the current one.
        """
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        self._schedule.outage_kind = FaultKind(kind)
        self._schedule.outage_until = self.clock() + seconds

    def clear(self) -> None:
        """Drop every queued script and the outage window; the rates stay."""
        self._schedule.scripts.clear()
        self._schedule.outage_until = None

    def decide(self, session_id: str | None) -> FaultDecision:
        """Decide the fate of one request; the emulator calls this once per affected request.

        Args:
            session_id: The session named in the request path, if any (for scripts).
        """
        # Always draw three numbers, so the n-th decision depends only on the seed and n.
        outcome_draw = self._random.random()
        latency_draw = self._random.random()
        delay_draw = self._random.random()
        low, high = self.latency_seconds
        delay = low + (high - low) * delay_draw if latency_draw < self.latency else 0.0
        forced = self._forced_kind(session_id)
        if forced is not None:
            kind: FaultKind | None = forced[0]
            if kind is FaultKind.LATENCY:
                return FaultDecision(kind=None, delay_seconds=low + (high - low) * delay_draw)
        else:
            kind = self._kind_for_draw(outcome_draw)
        return FaultDecision(kind=kind, delay_seconds=delay)

    def _forced_kind(self, session_id: str | None) -> tuple[FaultKind | None] | None:
        """Return the scripted or outage kind (wrapped, as None means "answer normally")."""
        schedule = self._schedule
        if session_id is not None and (queue := schedule.scripts.get(session_id)):
            kind = queue.popleft()
            if not queue:
                del schedule.scripts[session_id]
            return (kind,)
        if schedule.outage_until is not None:
            if self.clock() < schedule.outage_until:
                return (schedule.outage_kind,)
            schedule.outage_until = None
        return None

    def _kind_for_draw(self, draw: float) -> FaultKind | None:
        threshold = 0.0
        for kind in _OUTCOME_ORDER:
            threshold += self.rate_of(kind)
            if draw < threshold:
                return kind
        return None
