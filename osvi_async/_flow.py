"""Flow control for bulk runs: a shared retry budget, a circuit breaker and a rate limit.

One `FlowControl` is shared by every call of a run; the call loop (`_call.py`) asks it before
each attempt and tells it how each attempt ended. All of it runs on the event loop's thread,
so plain attributes are enough; no locks.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from typing import Final

from osvi_async._config import CircuitBreaker, RetryBudget
from osvi_async.errors import CircuitOpenError, OsviError

logger: Final = logging.getLogger("osvi_async")


class _State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class FlowControl:
    """Implements `_call.AttemptGate` for one bulk run."""

    def __init__(
        self,
        *,
        concurrency: int,
        budget: RetryBudget | None,
        breaker: CircuitBreaker | None,
        rate_limit: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._budget = budget
        self._tokens = 0.0
        self._max_tokens = 0.0
        # Read once per attempt: kept here, not looked up on the budget each time.
        self._per_request = self._per_success = 0.0
        if budget is not None:
            self._max_tokens = budget.max_tokens or float(max(100, 4 * concurrency))
            self._per_request, self._per_success = budget.per_request, budget.per_success
        self._breaker = breaker
        self._state = _State.CLOSED
        self._consecutive_failures = 0
        self._cooldown = breaker.cooldown if breaker is not None else 0.0
        self._open_since = 0.0
        self._probe_at = 0.0
        self._probe: asyncio.Task[object] | None = None
        self._changed = asyncio.Event()
        self._interval = 1.0 / rate_limit if rate_limit else 0.0
        # Circuit closed and no rate limit: an attempt goes at once. Read once per attempt,
        # so kept as one flag, updated by _set_state.
        self._clear = not self._interval
        self._next_slot = 0.0
        self.retries_refused = 0
        self.times_opened = 0

    @property
    def has_breaker(self) -> bool:
        """Whether the run has a circuit breaker at all."""
        return self._breaker is not None

    @property
    def circuit_state(self) -> str:
        """One of "closed", "open" or "half-open"."""
        return self._state.value

    def ready(self, number: int) -> bool:
        """Earn the first attempt's retry tokens; True if the attempt may go at once.

        The common case (circuit closed, no rate limit) needs no await at all.
        """
        if number == 1 and self._per_request:
            # (`_deposit` written out: this and the success below run once per item)
            tokens = self._tokens + self._per_request
            self._tokens = tokens if tokens < self._max_tokens else self._max_tokens
        return self._clear

    async def wait(self, number: int) -> None:
        """Wait for the circuit to let attempt `number` through, then for a rate-limit slot."""
        if self._state is not _State.CLOSED:
            await self._wait_for_circuit(number)
        if self._interval:
            await self._wait_for_slot()

    def after_attempt(self, error: OsviError | None, *, outage: bool) -> None:
        """Feed the budget and the breaker: successes earn tokens and close the circuit."""
        if error is None:
            if self._per_success:
                tokens = self._tokens + self._per_success
                self._tokens = tokens if tokens < self._max_tokens else self._max_tokens
            if self._consecutive_failures or self._state is not _State.CLOSED:
                self._reachable()
        elif outage:
            self._failed()
        else:
            self._reachable()  # a 4xx or a refusal: the API answered, so it is up

    def attempt_abandoned(self) -> None:
        """A cancelled probe lets the next waiting attempt probe at once."""
        if self._state is _State.HALF_OPEN and self._probe is asyncio.current_task():
            self._set_state(_State.OPEN)
            self._probe_at = self._clock()

    def allow_retry(self) -> bool:
        """Spend one token on a retry, if the budget has one (always True with no budget)."""
        if self._budget is None:
            return True
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.retries_refused += 1
        return False

    def _reachable(self) -> None:
        self._consecutive_failures = 0
        if self._state is not _State.CLOSED:
            logger.info("circuit closed: the API answered again", extra={"event": "circuit_closed"})
            self._cooldown = self._breaker.cooldown if self._breaker is not None else 0.0
            self._set_state(_State.CLOSED)

    def _failed(self) -> None:
        breaker = self._breaker
        if breaker is None:
            return
        if self._state is _State.CLOSED:
            self._consecutive_failures += 1
            if self._consecutive_failures >= breaker.failure_threshold:
                self.times_opened += 1
                self._open_since = self._clock()
                self._probe_at = self._open_since + self._cooldown
                logger.warning(
                    "circuit open after %d failures in a row: pausing sends for %.2f s",
                    self._consecutive_failures,
                    self._cooldown,
                    extra={
                        "event": "circuit_open",
                        "failures": self._consecutive_failures,
                        "delay": self._cooldown,
                    },
                )
                self._set_state(_State.OPEN)
        elif self._state is _State.HALF_OPEN and self._probe is asyncio.current_task():
            self._cooldown = min(self._cooldown * 2, breaker.max_cooldown)
            self._probe_at = self._clock() + self._cooldown
            logger.info(
                "probe failed: circuit stays open for %.2f s",
                self._cooldown,
                extra={"event": "probe_failed", "delay": self._cooldown},
            )
            self._set_state(_State.OPEN)
        # Failures of attempts sent before the circuit opened say nothing new.

    def _set_state(self, state: _State) -> None:
        self._state = state
        self._clear = state is _State.CLOSED and not self._interval
        if state is not _State.HALF_OPEN:
            self._probe = None
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _wait_for_circuit(self, number: int) -> None:
        breaker = self._breaker
        assert breaker is not None  # the circuit never leaves CLOSED without one
        while self._state is not _State.CLOSED:
            now = self._clock()
            changed = self._changed
            if self._state is _State.HALF_OPEN:
                # A probe is out: its verdict comes within one request timeout. Wait for it,
                # even past give_up_after, so that a recovery lets everyone through.
                await changed.wait()
                continue
            if now >= self._probe_at:
                # Probing goes on after giving up, so a recovery is still noticed.
                self._set_state(_State.HALF_OPEN)
                self._probe = asyncio.current_task()
                return
            give_up_at = self._open_since + breaker.give_up_after
            if now >= give_up_at:
                raise CircuitOpenError(
                    f"Not sent: the API failed {breaker.failure_threshold}+ times in a row and "
                    f"has not recovered for {now - self._open_since:.1f} s "
                    f"(give_up_after={breaker.give_up_after:g} s)",
                    attempts=number - 1,
                )
            try:
                async with asyncio.timeout(min(self._probe_at, give_up_at) - now):
                    await changed.wait()
            except TimeoutError:
                pass

    async def _wait_for_slot(self) -> None:
        now = self._clock()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)
