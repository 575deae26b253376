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

__all__ = ["ENDPOINT_NAMES", "FaultDecision", "FaultKind", "FaultPlan", "ManualClock"]

ENDPOINT_NAMES: Final = ("create_session", "active_session", "inbound", "support", "inject_context")
"""The emulator's endpoints, by the names fault plans and ``OsviEmulator.requests`` use:
``POST /v1/chat/session``, ``GET /v1/chat/session/active``, ``POST /v1/chat/inbound``,
``POST /v1/chat/session/{id}/support`` and ``POST /v1/chat/session/{id}/inject_context``."""

_DEFAULT_ENDPOINTS: Final = frozenset({"inject_context"})


class FaultKind(enum.StrEnum):
    """A failure the emulator can inject; the values are the names used in scripts and stats.

    Whether the request's change is applied (a context entry in ``OsviEmulator.applied``, a
    session opened, a message and its reply in ``OsviEmulator.messages``, a command carried out)
    is what a client needs to know to decide whether a retry may duplicate it, so each kind
    states it. The rules are the same on every endpoint.
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
    """The change IS applied, then the connection is closed without a response."""
    AMBIGUOUS_502 = "ambiguous_502"
    """The change IS applied, then a 502 ``Python engine returned 500 ...`` is returned."""
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


def _to_endpoints(value: Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        # A lone name would otherwise be read as a set of one-letter names.
        return frozenset({value})
    return frozenset(value)


def _check_endpoint(name: str) -> None:
    if name not in ENDPOINT_NAMES:
        raise ValueError(f"unknown endpoint {name!r}; expected one of: {', '.join(ENDPOINT_NAMES)}")


def _check_endpoints(
    instance: object,
    attribute: attrs.Attribute[frozenset[str] | None],
    value: frozenset[str] | None,
) -> None:
    for name in sorted(value or ()):
        _check_endpoint(name)


def _check_retry_after(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"retry_after_seconds must be >= 0, got {value!r}")


@attrs.define
class _Schedule:
    """The parts of a plan that tests change while the emulator runs."""

    scripts: dict[str, deque[FaultKind | None]] = attrs.field(factory=dict)
    endpoint_scripts: dict[str, deque[FaultKind | None]] = attrs.field(factory=dict)
    outage_until: float | None = None
    outage_kind: FaultKind = FaultKind.ENGINE_ERROR


@attrs.frozen(kw_only=True)
class FaultPlan:
    """Failures to inject into emulator requests, reproducible from ``seed``.

    Each rate is the probability, in [0, 1], that one request gets that failure; the failure
    rates are mutually exclusive and must sum to at most 1. ``latency`` is drawn independently
    and delays a request before any other handling.

    Which endpoints a plan covers: ``endpoints`` names them (see ``ENDPOINT_NAMES``:
    ``"create_session"``, ``"active_session"``, ``"inbound"``, ``"support"``,
    ``"inject_context"``); ``all_endpoints=True`` is every one of them; by default only
    ``inject_context`` is covered. Rates, outages and per-session scripts apply to covered
    requests only.

    Two kinds of scripts force the next answers, in order:

    - ``plan.script(session_id, kinds)`` for the session named in the request path
      (``inject_context`` and ``support``), on covered endpoints;
    - ``plan.script_endpoint(endpoint, kinds)`` for the next requests to one endpoint, whatever
      session they concern: the way to script ``create_session``, ``active_session`` and
      ``inbound``, which have no session id in their path. Naming the endpoint is enough: an
      endpoint script applies even when ``endpoints`` does not cover it (and then the plan's
      rates and outages still do not).

    For example, to make the next message to the agent fail after it was processed::

        plan = FaultPlan()
        plan.script_endpoint("inbound", ["ambiguous_502"])

    Every request the plan applies to draws the same amount of randomness, so with a fixed
    ``seed`` the n-th such request always gets the same decision. A session's script takes
    precedence over an endpoint's script, which takes precedence over an outage window
    (``outage``), which takes precedence over the rates.

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
        endpoints: The endpoints the plan covers, by name (see ``ENDPOINT_NAMES``); None
            means ``{"inject_context"}``, or every endpoint with ``all_endpoints``.
        all_endpoints: Cover every endpoint; cannot be combined with ``endpoints``.
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
    endpoints: frozenset[str] | None = attrs.field(
        default=None, converter=_to_endpoints, validator=_check_endpoints
    )
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
        if self.all_endpoints and self.endpoints is not None:
            raise ValueError("give either endpoints or all_endpoints=True, not both")

    @property
    def covered_endpoints(self) -> frozenset[str]:
        """The endpoints whose requests the rates, outages and session scripts apply to."""
        if self.all_endpoints:
            return frozenset(ENDPOINT_NAMES)
        return _DEFAULT_ENDPOINTS if self.endpoints is None else self.endpoints

    def rate_of(self, kind: FaultKind | str) -> float:
        """Return the configured rate of ``kind``."""
        return float(getattr(self, FaultKind(kind).value))

    def script(self, session_id: str, kinds: Iterable[FaultKind | str | None]) -> None:
        """Make the next calls for ``session_id`` take these faults, in order, then behave normally.

        ``None`` in ``kinds`` means one normal answer. Appends to any script already queued for
        the session. Only requests to covered endpoints (see ``endpoints``) that name the
        session in their path consume entries.
        """
        entries = [None if kind is None else FaultKind(kind) for kind in kinds]
        if entries:
            self._schedule.scripts.setdefault(session_id, deque()).extend(entries)

    def script_endpoint(self, endpoint: str, kinds: Iterable[FaultKind | str | None]) -> None:
        """Make the next requests to ``endpoint`` take these faults, in order, then behave normally.

        ``endpoint`` is one of ``ENDPOINT_NAMES``; ``None`` in ``kinds`` means one normal answer.
        Appends to any script already queued for the endpoint. Applies even when the plan's
        ``endpoints`` do not cover ``endpoint``; a session's own script (``script``) is used
        first when a request has both.

        Raises:
            ValueError: ``endpoint`` or one of ``kinds`` is not a known name.
        """
        _check_endpoint(endpoint)
        entries = [None if kind is None else FaultKind(kind) for kind in kinds]
        if entries:
            self._schedule.endpoint_scripts.setdefault(endpoint, deque()).extend(entries)

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
        self._schedule.endpoint_scripts.clear()
        self._schedule.outage_until = None

    def decide(self, session_id: str | None, endpoint: str | None = None) -> FaultDecision:
        """Decide the fate of one request; the emulator calls this once per request.

        Args:
            session_id: The session named in the request path, if any (for scripts).
            endpoint: The endpoint's name (see ``ENDPOINT_NAMES``); None counts as covered.
        """
        covered = endpoint is None or endpoint in self.covered_endpoints
        if not covered and endpoint not in self._schedule.endpoint_scripts:
            # Not the plan's business: no draw, so covered requests keep their sequence.
            return FaultDecision()
        # Always draw three numbers, so the n-th decision depends only on the seed and n.
        outcome_draw = self._random.random()
        latency_draw = self._random.random()
        delay_draw = self._random.random()
        low, high = self.latency_seconds
        delay = low + (high - low) * delay_draw if latency_draw < self.latency else 0.0
        forced = self._forced_kind(session_id, endpoint, covered=covered)
        if forced is not None:
            kind: FaultKind | None = forced[0]
            if kind is FaultKind.LATENCY:
                return FaultDecision(kind=None, delay_seconds=low + (high - low) * delay_draw)
        else:
            kind = self._kind_for_draw(outcome_draw)
        return FaultDecision(kind=kind, delay_seconds=delay)

    def _forced_kind(
        self, session_id: str | None, endpoint: str | None, *, covered: bool
    ) -> tuple[FaultKind | None] | None:
        """Return the scripted or outage kind (wrapped, as None means "answer normally")."""
        schedule = self._schedule
        if covered and session_id is not None and session_id in schedule.scripts:
            return (_pop(schedule.scripts, session_id),)
        if endpoint is not None and endpoint in schedule.endpoint_scripts:
            return (_pop(schedule.endpoint_scripts, endpoint),)
        if not covered:
            return None
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


def _pop(scripts: dict[str, deque[FaultKind | None]], key: str) -> FaultKind | None:
    """Take the next entry of ``scripts[key]``, dropping the script once it is used up."""
    queue = scripts[key]
    kind = queue.popleft()
    if not queue:
        del scripts[key]
    return kind
