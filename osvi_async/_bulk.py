"""inject_many: many entries, bounded in flight, in order per session, every item accounted for.

How a run is laid out:

- a *feeder* task pulls items from the input lazily, checks them, and puts each in its
  session's *lane*. It stops pulling while `max_pending` items are open (pulled and not yet
  handed to the caller), so memory does not grow with the input;
- a lane is a queue per session id. Only the head of a lane is ever *ready*, so one session
  never has two requests in flight and its entries are applied in input order, while other
  sessions proceed in parallel;
- `concurrency` *worker* tasks take ready items and send them (with retries, under the run's
  shared `FlowControl`); when one finishes, the next item of its lane becomes ready;
- outcomes reach the caller through an unbounded deque, bounded in practice by `max_pending`.

The hand-offs are plain deques, not `asyncio.Queue`s: every task here runs on one loop, so a
hand-off needs no lock, only a wake-up when someone is waiting. An item admitted while a worker
is idle goes straight to that worker (it is in flight from that moment, so a stop accounts for
it); otherwise it waits in the ready deque, which busy workers empty before they idle. An
outcome is appended to the finished deque and wakes the caller only if it is waiting. Each
worker keeps one `ItemGate` and points it at the item it sends. Nothing here allocates per
item beyond the item, its outcome and the request's own objects.

When an item fails in a way a later attempt could fix, its lane is *blocked* for the rest of
the run (with `hold_on_failure`): the lane's queued items, and any pulled later, are *held*
(`ItemHeldError`), never sent, so a resume can send the session's remaining entries in order.

Stopping: `drain()` stops pulling, ends queued items and waits (circuit, backoff) at once
and lets attempts on the wire finish within a grace period; `stop()` (the caller breaks out,
closes or cancels) cancels the tasks at once. Either way every item that was pulled but not
handed over becomes part of `BulkRun.leftovers`, so nothing goes unaccounted.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from types import AsyncGeneratorType, TracebackType
from typing import Final, Self, cast

import attrs

from osvi_async._adaptive import AdaptiveConcurrency
from osvi_async._addressing import AddressWindow
from osvi_async._call import AttemptGate, call
from osvi_async._config import RetryPolicy
from osvi_async._endpoints import INJECT_CONTEXT
from osvi_async._flow import FlowControl
from osvi_async._lanes import (
    AdaptiveItemGate,
    InjectItem,
    Item,
    ItemGate,
    LookupGate,
    OnSend,
    StopSignal,
    as_request,
    checked_item,
    held_outcome,
    pair_lane,
    refused_for_good,
    stopped_outcome,
)
from osvi_async._retry import logger
from osvi_async._sessions import SessionCache, inject_for_customer
from osvi_async._telemetry import Telemetry
from osvi_async._transport import Transport
from osvi_async.errors import (
    ClientClosedError,
    ClientValidationError,
    OsviError,
    RunStoppedError,
)
from osvi_async.models import (
    BulkSummary,
    CustomerInjectRequest,
    InjectContextResult,
    InjectOutcome,
    InjectRequest,
)

__all__ = ["BulkRun", "InjectItem", "as_request", "refused_for_good"]

# Workers an auto run keeps beyond twice its limit, so a small limit still has some to spare.
_SPARE_WORKERS: Final = 16

# Ends the caller's iteration; an outcome itself, so the outcome deque needs no casts.
_END: Final = InjectOutcome(-1, None, ok=False)


class _Engine:
    """The state of one run; driven by `run()`, an async generator of outcomes."""

    def __init__(
        self,
        *,
        transport: Transport,
        url_for: Callable[[str], str],
        sessions: SessionCache,
        look_up: Callable[[str, str, float, RetryPolicy, AttemptGate], Awaitable[str]],
        max_context_bytes: int,
        items: Iterable[InjectItem] | AsyncIterable[InjectItem],
        concurrency: int,
        max_pending: int,
        timeout: float,
        policy: RetryPolicy,
        flow: FlowControl,
        hold_on_failure: bool = True,
        on_send: OnSend | None = None,
        adaptive: bool = False,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._transport = transport
        self._telemetry = telemetry
        self._url_for = url_for
        self._sessions = sessions
        self._look_up = look_up
        # Items addressed by customer wait here for their session, in input order.
        self._window = AddressWindow(
            sessions, self._run_look_up, url_for, limit=max(1, concurrency), on_ready=self._release
        )
        self._max_context_bytes = max_context_bytes
        self._items = items
        self._concurrency = concurrency
        self._max_pending = max_pending
        # The feeder sleeps when max_pending items are open and wakes only once a quarter of
        # them were handed over, then refills in one go: one task switch per batch, not per
        # item.
        self._refill_below = max_pending - max(1, max_pending // 4)
        self._timeout = timeout
        self._signal = StopSignal()
        # A backoff sleep (the policy's own, a test's fake included) ends at once on a drain.
        self._policy = attrs.evolve(policy, sleep=self._signal.sleeper(policy.sleep))
        self.flow = flow
        self._hold = hold_on_failure
        self._on_send = on_send
        # With concurrency="auto": the adaptive limit lets only so many attempts on the
        # wire at once, and workers are added as it grows, up to `concurrency` (the maximum).
        self.adaptive = (
            AdaptiveConcurrency(concurrency, on_change=self._add_workers) if adaptive else None
        )
        self._workers = 0
        # A lane per session with an item in flight or ready: the items waiting behind it,
        # or None while there are none (most sessions never need a deque).
        self._lanes: dict[str, deque[Item] | None] = {}
        # The lane each (customer, agent) pair's items go to while that lane is open.
        self._pair_lanes: dict[str, str] = {}
        # Lanes whose session is held, with the index of the item that failed: one entry per
        # distinct blocked session.
        self._blocked: dict[str, int] = {}
        # Lane heads no worker has taken yet; while it holds any, no worker is idle.
        self._ready: deque[Item] = deque()
        # Idle workers, each waiting on its future for the next ready item.
        self._idle: deque[asyncio.Future[Item]] = deque()
        # Outcomes not yet handed to the caller (and the _END mark), and the caller's wait.
        self._finished: deque[InjectOutcome] = deque()
        self._caller: asyncio.Future[None] | None = None
        self._in_flight: dict[int, Item] = {}
        self._stopped: list[InjectOutcome] = []  # RunStoppedError outcomes, for leftovers
        # The feeder's wait for the caller to take outcomes (None while it is not waiting).
        self._room: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._grace_timer: asyncio.TimerHandle | None = None
        self._grace_ends = math.inf
        self._input_error: BaseException | None = None
        self._input_exhausted = False
        self._pulled = 0
        self._open = 0  # pulled, not yet handed to the caller
        self._unfinished = 0  # valid items pulled and not finished
        self._started = 0.0
        self._stopped_at: float | None = None
        self._halted = False
        self.draining = False
        self.succeeded = 0
        self.failed = 0
        self.held = 0
        self.invalid = 0
        self.retries = 0
        self.possible_duplicates = 0
        self.leftovers: tuple[InjectOutcome, ...] = ()

    def summary(self) -> BulkSummary:
        """The counters now."""
        interrupted = sum(
            1
            for outcome in self._stopped
            if isinstance(outcome.error, RunStoppedError) and outcome.error.request_sent
        )
        end = self._stopped_at if self._stopped_at is not None else time.monotonic()
        return BulkSummary(
            items=self._pulled,
            succeeded=self.succeeded,
            failed=self.failed,
            held=self.held,
            invalid=self.invalid,
            retries=self.retries,
            retries_refused=self.flow.retries_refused,
            possible_duplicates=self.possible_duplicates,
            not_sent=len(self._stopped) - interrupted,
            interrupted=interrupted,
            elapsed=end - self._started if self._started else 0.0,
            concurrency_limit=self.concurrency_limit,
        )

    @property
    def concurrency_limit(self) -> int:
        """Attempts allowed in flight now: the adaptive limit, or the fixed concurrency."""
        return self._concurrency if self.adaptive is None else self.adaptive.limit

    async def run(self) -> AsyncGenerator[InjectOutcome, None]:
        """Start the tasks and yield outcomes as they finish; clean up however it ends."""
        self._started = time.monotonic()
        self._loop = asyncio.get_running_loop()
        if self.draining:  # drained before the first item was asked for: pull nothing
            await self.stop()
            return
        self._tasks.append(asyncio.create_task(self._feed(), name="osvi-bulk-feeder"))
        self._add_workers(self.concurrency_limit)
        loop, finished = self._loop, self._finished
        if self._telemetry is not None:
            self._telemetry.watch_run(self)  # the gauges read it: nothing per item
        try:
            while True:
                if not finished:
                    self._caller = loop.create_future()
                    await self._caller
                    continue
                outcome = finished.popleft()
                if outcome is _END:
                    break
                self._open -= 1
                if self._room is not None and self._open <= self._refill_below:
                    _wake(self._room)
                    self._room = None
                yield outcome
            if self._input_error is not None and not self._halted:
                raise self._input_error
        finally:
            if self._telemetry is not None:
                self._telemetry.unwatch_run(self)
            await self.stop()

    @property
    def in_flight_count(self) -> int:
        """Items being sent right now (for the `osvi.bulk.in_flight` gauge)."""
        return len(self._in_flight)

    @property
    def breaker_state(self) -> str | None:
        """The run's circuit state, None without a breaker (for `osvi.bulk.circuit.state`)."""
        return self.flow.circuit_state if self.flow.has_breaker else None

    def _add_workers(self, limit: int) -> None:
        """Enough workers for `limit` attempts on the wire, and as many again for items
        sleeping in a backoff (a worker keeps its item through it), up to `concurrency`."""
        if self._halted or self.draining:
            return
        wanted = self._concurrency
        if self.adaptive is not None:
            wanted = min(wanted, 2 * limit + _SPARE_WORKERS)
        while self._workers < wanted:
            self._workers += 1
            name = f"osvi-bulk-worker-{self._workers}"
            self._tasks.append(asyncio.create_task(self._work(), name=name))

    def drain(self, grace: float) -> None:
        """Stop gracefully: pull no more, start no attempt, give those on the wire `grace` s.

        Plain (no await), so a signal handler can call it. Calling it again with a shorter
        grace shortens the wait; `drain(0)` stops at once.
        """
        if self._halted:
            return
        if not self.draining:
            self.draining = True
            self._signal.stop()  # ends waits for the circuit, a rate slot or a backoff
            if self._tasks:
                self._tasks[0].cancel()  # the feeder: pull nothing more
            self._input_exhausted = True
            for item in self._window.take_all():
                self._stopped.append(stopped_outcome(item))  # pulled, never admitted
            for item in self._take_queued():
                self._stopped.append(stopped_outcome(item))
                self._unfinished -= 1
            if self._unfinished == 0:
                self._deliver(_END)
        if self._loop is None:
            return  # not started: `run` ends at once
        ends = self._loop.time() + grace
        if ends >= self._grace_ends:
            return
        self._grace_ends = ends
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        if grace <= 0:
            self._halt()
        else:
            self._grace_timer = self._loop.call_later(grace, self._halt)

    async def stop(self) -> None:
        """Stop the run at once (idempotent) and wait for its tasks to end.

        Everything the caller needs (leftovers, counts) is settled before the first await,
        so a second cancellation while waiting cannot lose it.
        """
        self._halt()
        # Finished, never handed to the caller.
        unhanded = [outcome for outcome in self._finished if outcome is not _END]
        self._finished.clear()
        if unhanded:
            self.leftovers = _by_index([*self.leftovers, *unhanded])
        self._deliver(_END)  # wakes a consumer waiting in another task
        tasks, self._tasks = self._tasks, []
        if tasks:
            ended = await asyncio.gather(*tasks, return_exceptions=True)
            for task, result in zip(tasks, ended, strict=True):
                if isinstance(result, Exception):  # a bug: say so rather than hide it
                    logger.error(
                        "bulk run: %s failed",
                        task.get_name(),
                        exc_info=result,
                        extra={"event": "bulk_task_failed"},
                    )

    def _halt(self) -> None:
        """Cancel everything; items still in flight or queued become stopped leftovers.

        Outcomes already finished stay queued for the caller (a drain's grace running out
        ends the iteration after them); `stop` hands back any the caller will not take.
        """
        if self._halted:
            return
        self._halted = True
        self._signal.stopping = True
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        for task in self._tasks:
            task.cancel()  # takes effect at each task's next step; nothing moves before that
        self._stopped_at = time.monotonic()
        self._stopped.extend(stopped_outcome(item) for item in self._in_flight.values())
        self._in_flight.clear()
        self._stopped.extend(stopped_outcome(item) for item in self._take_queued())
        self._stopped.extend(stopped_outcome(item) for item in self._window.take_all())
        self._lanes.clear()
        self._idle.clear()  # their workers are cancelled
        self.leftovers = _by_index(self._stopped)
        self._deliver(_END)

    def _deliver(self, outcome: InjectOutcome) -> None:
        """Queue an outcome (or _END) for the caller, and wake the caller if it waits."""
        self._finished.append(outcome)
        if self._caller is not None:
            _wake(self._caller)
            self._caller = None

    def _take_queued(self) -> list[Item]:
        """Every item waiting in the ready deque or a lane, taken out; lanes stay open."""
        queued = list(self._ready)
        self._ready.clear()
        for followers in self._lanes.values():
            if followers:
                queued.extend(followers)
                followers.clear()
        return queued

    async def _feed(self) -> None:
        try:
            await self._pull_input()
        except Exception as exc:
            self._input_error = exc
        # What was pulled still goes out, even if the input then failed (as it would without
        # lookups): the items waiting for their session get it first.
        while not self._window.empty and not self.draining:
            await self._window.wait()
            self._release()
        if self.draining:
            return  # the drain ended the input and ends the run
        self._input_exhausted = True
        if self._unfinished == 0:
            self._deliver(_END)

    async def _pull_input(self) -> None:
        """Pull items until the input ends or the run drains.

        Room is checked *before* an item is pulled, so stopping never strands one that was
        taken from the caller's iterator but not yet counted. A plain pull, the common case,
        has nothing to wait for and no call to make before it.
        """
        window = self._window
        if isinstance(self._items, AsyncIterable):
            async_items = aiter(self._items)
            while not self.draining:
                if self._open >= self._max_pending or not window.empty:
                    await self._make_room()
                try:
                    raw = await anext(async_items)
                except StopAsyncIteration:
                    return
                self._pull(raw)
        else:
            items = iter(self._items)
            while not self.draining:
                if self._open >= self._max_pending or not window.empty:
                    await self._make_room()
                try:
                    raw = next(items)
                except StopIteration:
                    return
                self._pull(raw)

    async def _make_room(self) -> None:
        """Before pulling: wait for the first lookup when as many run as allowed, or when
        the items pulled and not handed over are all waiting behind it; then for the caller
        to take outcomes."""
        while True:
            self._release()
            if not self._window.empty and (self._window.full or self._open >= self._max_pending):
                await self._window.wait()  # the window's first item has to move first
                continue
            if self._open >= self._max_pending:
                await self._wait_for_room()
            return

    async def _run_look_up(self, customer_id: str, agent_uuid: str) -> str:
        # The run's timeout, policy (its backoff ends at once on a drain) and flow control.
        gate = LookupGate(self.flow, self._signal)
        return await self._look_up(customer_id, agent_uuid, self._timeout, self._policy, gate)

    async def _wait_for_room(self) -> None:
        while self._open > self._refill_below:
            assert self._loop is not None
            self._room = self._loop.create_future()
            await self._room

    def _pull(self, raw: object) -> None:
        """Count one input item; an invalid one ends here, a valid one joins the window."""
        index = self._pulled
        self._pulled += 1
        self._open += 1
        request: InjectRequest | CustomerInjectRequest | None = None
        try:
            if type(raw) is tuple and len(raw) == 2:  # the commonest form, read in place
                request = InjectRequest(raw[0], raw[1])
            else:
                request = as_request(raw)
            item = checked_item(index, request, self._url_for, self._max_context_bytes)
        except ClientValidationError as exc:
            self.failed += 1
            self.invalid += 1
            self._deliver(InjectOutcome(index, request, ok=False, error=exc))
            return
        if self._window.empty and isinstance(item.request, InjectRequest):
            self._admit(item)  # the common case: nothing to wait for
            return
        self._window.add(item)
        self._release()

    def _release(self) -> None:
        """Admit the items at the front of the window whose session is known, in order."""
        for item, error in self._window.ready():
            if error is None or item.lane in self._blocked:
                self._admit(item)  # an item whose pair is held is held there, not failed
                continue
            # The lookup failed: the item fails unsent, and, unless the failure is final
            # (no active session), later items of the pair are held behind it.
            self.failed += 1
            self._deliver(InjectOutcome(item.index, item.request, ok=False, error=error))
            if self._hold and not refused_for_good(error):
                self._blocked[item.lane] = item.index

    def _admit(self, item: Item) -> None:
        """Put an item whose session is known into its session's lane (or hold it)."""
        request = item.request
        if self.draining:  # pulled as the drain began (the input itself drained the run)
            self._stopped.append(stopped_outcome(item))
            return
        if self._blocked:
            waiting_for = self._blocked.get(item.lane)
            if waiting_for is None and isinstance(request, CustomerInjectRequest):
                waiting_for = self._blocked.get(pair_lane(request))
            if waiting_for is not None:
                self.held += 1
                self._deliver(held_outcome(item.index, request, waiting_for))
                return
        if isinstance(request, CustomerInjectRequest):
            # A pair whose session changed during the run (closed, a new one opened) keeps
            # the lane its earlier items are still in: one at a time, in input order.
            pair = pair_lane(request)
            earlier = self._pair_lanes.get(pair)
            if earlier is not None and earlier in self._lanes:
                item.lane = earlier
            else:
                self._pair_lanes[pair] = item.lane
        self._unfinished += 1
        lanes = self._lanes
        if item.lane in lanes:  # behind the session's item in flight (or ready)
            followers = lanes[item.lane]
            if followers is None:
                lanes[item.lane] = deque((item,))
            else:
                followers.append(item)
            return
        lanes[item.lane] = None
        idle = self._idle
        while idle:
            worker = idle.popleft()
            if not worker.done():  # (a cancelled worker's future is done)
                # In flight from now on, so a stop before the worker wakes accounts for it.
                self._in_flight[item.index] = item
                worker.set_result(item)
                return
        self._ready.append(item)

    async def _send_for_customer(
        self, item: Item, request: CustomerInjectRequest, gate: ItemGate
    ) -> InjectContextResult:
        """Inject an item addressed by customer into the session found for it; if that one
        was closed meanwhile, into the pair's new one (see `inject_for_customer`)."""

        async def inject(session_id: str) -> InjectContextResult:
            item.session_id, item.url = session_id, self._url_for(session_id)
            return await call(
                self._transport,
                INJECT_CONTEXT,
                item.url,
                item.body,
                timeout=self._timeout,
                policy=self._policy,
                session_id=session_id,
                entry=request.context,
                gate=gate,
                resent=request.may_have_been_applied,
                telemetry=self._telemetry,
            )

        return await inject_for_customer(
            self._sessions,
            request.customer_id,
            request.agent_uuid,
            self._run_look_up,
            inject,
            known=item.session_id,
        )

    async def _work(self) -> None:
        # One gate per worker, pointed at the item being sent: no gate object per item.
        gate = (
            ItemGate(self.flow, self._signal, self._on_send)
            if self.adaptive is None
            else AdaptiveItemGate(self.flow, self._signal, self._on_send, self.adaptive)
        )
        ready, in_flight = self._ready, self._in_flight
        transport, timeout, policy = self._transport, self._timeout, self._policy
        telemetry = self._telemetry
        while True:
            if ready:
                item = ready.popleft()
                in_flight[item.index] = item
            else:
                item = await self._wait_for_item()
            gate.item = item
            result: InjectContextResult | None = None
            error: OsviError | None = None
            try:
                request = item.request
                # An item addressed by session goes straight to `call`: no extra coroutine
                # frame on the path nearly every bulk item takes.
                if isinstance(request, InjectRequest):
                    result = await call(
                        transport,
                        INJECT_CONTEXT,
                        item.url,
                        item.body,
                        timeout=timeout,
                        policy=policy,
                        session_id=item.session_id,
                        entry=request.context,
                        gate=gate,
                        resent=request.may_have_been_applied,
                        telemetry=telemetry,
                    )
                else:
                    result = await self._send_for_customer(item, request, gate)
            except OsviError as exc:
                error = exc
            except Exception as exc:
                error = OsviError(
                    f"Unexpected {type(exc).__name__} while sending: {exc}",
                    attempts=item.attempts_started,
                )
                error.may_have_been_applied = (
                    item.maybe_applied or item.on_the_wire or item.request.may_have_been_applied
                )
                error.__cause__ = exc
            if in_flight.pop(item.index, None) is None:
                return  # the run was stopped meanwhile, and that stop accounted for the item
            self._finish(item, result, error)
            if isinstance(error, ClientClosedError):
                # The client was closed under the run: nothing more can be sent, so stop it
                # as aclose() would (the rest become leftovers) instead of failing item
                # after item and tripping the breaker.
                self._halt()
                return

    async def _wait_for_item(self) -> Item:
        """Idle until `_admit` hands this worker an item (already counted as in flight)."""
        assert self._loop is not None
        worker: asyncio.Future[Item] = self._loop.create_future()
        self._idle.append(worker)
        return await worker

    def _finish(
        self, item: Item, result: InjectContextResult | None, error: OsviError | None
    ) -> None:
        if result is not None:
            self.succeeded += 1
            self.retries += result.attempts - 1
            self.possible_duplicates += result.possible_duplicate
            outcome = InjectOutcome(item.index, item.request, True, result)
            if self._caller is None:
                self._finished.append(outcome)  # all `_deliver` does when nobody waits
            else:
                self._deliver(outcome)
        elif isinstance(error, RunStoppedError):  # a drain ended its wait for an attempt
            self.retries += max(0, item.attempts_started - 1)
            maybe = error.may_have_been_applied
            self._stopped.append(stopped_outcome(item, maybe_applied=maybe))
        else:
            self._fail(item, error)
        followers = self._lanes.get(item.lane)
        if followers:
            # The worker that finished takes it (or an older ready item) next: no wake-up.
            self._ready.append(followers.popleft())
        else:
            self._lanes.pop(item.lane, None)
            if isinstance(item.request, CustomerInjectRequest):
                pair = pair_lane(item.request)
                if self._pair_lanes.get(pair) == item.lane:
                    del self._pair_lanes[pair]
        self._unfinished -= 1
        if self._input_exhausted and self._unfinished == 0:
            self._deliver(_END)

    def _fail(self, item: Item, error: OsviError | None) -> None:
        """Count and report a failed item; hold its session's later items unless the same
        item would be refused again."""
        self.failed += 1
        self.retries += max(0, (error.attempts if error is not None else 0) - 1)
        self._deliver(InjectOutcome(item.index, item.request, ok=False, error=error))
        if self._hold and (error is None or not refused_for_good(error)):
            # Later items of this session would overtake this one: hold them all.
            self._blocked[item.lane] = item.index
            if isinstance(item.request, CustomerInjectRequest):
                self._blocked.setdefault(pair_lane(item.request), item.index)
            followers = self._lanes.get(item.lane)
            if followers:
                for held in followers:
                    self.held += 1
                    self._unfinished -= 1
                    self._deliver(held_outcome(held.index, held.request, item.index))
                followers.clear()


def _by_index(outcomes: list[InjectOutcome]) -> tuple[InjectOutcome, ...]:
    return tuple(sorted(outcomes, key=lambda outcome: outcome.index))


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # (cancelled with its task)
        waiter.set_result(None)


class BulkRun:
    """The outcomes of `OsviClient.inject_many`, as an async iterator, in completion order.

    Iterate it to drive the run; nothing is sent before the first `__anext__`. Use it as an
    async context manager (or call `aclose()`) so that breaking out of the loop stops the
    run at once::

        async with client.inject_many(items) as run:
            async for outcome in run:
                ...
        print(run.summary)

    Without the context manager, a run abandoned mid-way is stopped when it is garbage
    collected.
    """

    __slots__ = ("_engine", "_outcomes")

    def __init__(self, engine: _Engine) -> None:
        self._engine = engine
        self._outcomes = cast("AsyncGeneratorType[InjectOutcome, None]", engine.run())

    def __aiter__(self) -> Self:
        return self

    def __anext__(self) -> Awaitable[InjectOutcome]:
        # The generator's own awaitable, not a coroutine around it: one frame less per item.
        return self._outcomes.__anext__()

    async def aclose(self) -> None:
        """Stop the run: no new sends, in-flight requests are cancelled. Idempotent.

        Safe to call from another task than the one iterating: that one then sees the
        iteration end, and `leftovers` accounts for what did not finish.
        """
        if self._outcomes.ag_running:
            await self._engine.stop()  # the iterating task finishes the generator itself
        else:
            await self._outcomes.aclose()

    def drain(self, grace: float = 10.0) -> None:
        """Stop gracefully: let requests on the wire finish, send nothing more.

        The run stops pulling input; items not yet sent (queued, or waiting for the circuit,
        a rate-limit slot or a backoff sleep) end at once in `leftovers` as `RunStoppedError`,
        and no new attempt or retry starts. Attempts already on the wire get up to `grace`
        seconds to finish; their outcomes are yielded as usual, then the iteration ends
        normally. Those still unfinished when the grace runs out are cancelled and go to
        `leftovers` as `RunStoppedError(request_sent=True)` (they may have been applied).

        A plain method (no await), so it can be called from any task on the run's loop or
        from a signal handler installed with `loop.add_signal_handler`::

            loop.add_signal_handler(signal.SIGTERM, run.drain)

        Calling it again with a shorter grace shortens the wait; `drain(0)` stops at once,
        like `aclose()` but leaving the iteration to end by itself. A drain before the
        first item was asked for ends the run with nothing pulled.

        Args:
            grace: Seconds attempts on the wire may take to finish; 0 or more.

        Raises:
            ClientValidationError: `grace` is negative or not a number.
        """
        if isinstance(grace, bool) or not isinstance(grace, int | float) or not grace >= 0:
            raise ClientValidationError(f"grace must be a number of seconds >= 0, got {grace!r}")
        self._engine.drain(float(grace))

    @property
    def draining(self) -> bool:
        """True once `drain()` was called."""
        return self._engine.draining

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def summary(self) -> BulkSummary:
        """Counts so far; final once the iteration ended or the run was closed."""
        return self._engine.summary()

    @property
    def leftovers(self) -> tuple[InjectOutcome, ...]:
        """Outcomes the caller did not receive because the run was stopped early, by index.

        Items still queued fail with `RunStoppedError(request_sent=False)`; items in flight
        with `RunStoppedError(request_sent=True)`; items that had finished but were not yet
        handed over keep their real outcome. Items after `summary.items` were never pulled
        from the input. Empty after a run that was iterated to the end without a `drain()`;
        after a drain, it holds the items the drain did not let start (or finish in time).
        Held items (`ItemHeldError`) are not here: they are yielded like any outcome.
        """
        return self._engine.leftovers

    @property
    def circuit_state(self) -> str:
        """The run's circuit breaker: "closed", "open" or "half-open"."""
        return self._engine.flow.circuit_state

    @property
    def concurrency_limit(self) -> int:
        """Attempts allowed in flight now: with `concurrency="auto"` the adaptive limit, as
        it moves; otherwise the fixed `concurrency`."""
        return self._engine.concurrency_limit
