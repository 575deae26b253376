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
- outcomes reach the caller through an unbounded queue, bounded in practice by `max_pending`.

Stopping early (the caller breaks out, or cancels) cancels the tasks; every item that was
pulled but not handed over becomes part of `BulkRun.leftovers`, so nothing goes unaccounted.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from types import AsyncGeneratorType, TracebackType
from typing import Final, Self, cast

from osvi_async._config import RetryPolicy
from osvi_async._flow import FlowControl
from osvi_async._retry import may_have_been_applied
from osvi_async._send import send_inject_context
from osvi_async._transport import Transport
from osvi_async._validation import check_context, check_session_id, encode_inject_body
from osvi_async.errors import ClientValidationError, OsviError, RunStoppedError
from osvi_async.models import BulkSummary, InjectContextResult, InjectOutcome, InjectRequest

InjectItem = InjectRequest | tuple[str, str]
"""What `inject_many` accepts per item."""

_END: Final = object()


class _Item:
    """An item that passed the checks and waits in a lane, is ready, or is in flight."""

    __slots__ = (
        "attempts_started",
        "body",
        "index",
        "lane",
        "maybe_applied",
        "on_the_wire",
        "request",
        "session_id",
        "url",
    )

    def __init__(self, index: int, request: InjectRequest, url: str, body: bytes) -> None:
        self.index = index
        self.request = request
        self.session_id = request.session_id
        # UUIDs are case-insensitive: two spellings of one session share one lane.
        self.lane = request.session_id.lower()
        self.url = url
        self.body = body
        self.attempts_started = 0
        self.on_the_wire = False  # an attempt was let through and has not ended yet
        self.maybe_applied = False  # an ended attempt may have applied the entry


class _ItemGate:
    """The run's flow control, seen by one item: it also notes which attempts went out."""

    __slots__ = ("_flow", "_item")

    def __init__(self, flow: FlowControl, item: _Item) -> None:
        self._flow = flow
        self._item = item

    def ready(self, number: int) -> bool:
        if self._flow.ready(number):
            self._started(number)
            return True
        return False

    async def wait(self, number: int) -> None:
        await self._flow.wait(number)
        self._started(number)

    def _started(self, number: int) -> None:
        self._item.attempts_started = number
        self._item.on_the_wire = True

    def after_attempt(self, error: OsviError | None, *, outage: bool) -> None:
        self._item.on_the_wire = False
        if error is not None and may_have_been_applied(error):
            self._item.maybe_applied = True
        self._flow.after_attempt(error, outage=outage)

    def attempt_abandoned(self) -> None:
        # Called when an attempt was cancelled mid-send (a stop snapshots the item before
        # that, while it is still on the wire) or was never sent (the deadline passed).
        self._item.on_the_wire = False
        self._flow.attempt_abandoned()

    def allow_retry(self) -> bool:
        return self._flow.allow_retry()


def as_request(raw: object) -> InjectRequest:
    """Read one input item as an InjectRequest, or raise ClientValidationError."""
    if isinstance(raw, InjectRequest):
        return raw
    if isinstance(raw, tuple) and len(raw) == 2:
        return InjectRequest(session_id=raw[0], context=raw[1])
    raise ClientValidationError(
        f"each item must be an InjectRequest or a (session_id, context) tuple, "
        f"got {type(raw).__name__}"
    )


class _Engine:
    """The state of one run; driven by `run()`, an async generator of outcomes."""

    def __init__(
        self,
        *,
        transport: Transport,
        url_for: Callable[[str], str],
        max_context_bytes: int,
        items: Iterable[InjectItem] | AsyncIterable[InjectItem],
        concurrency: int,
        max_pending: int,
        timeout: float,
        policy: RetryPolicy,
        flow: FlowControl,
    ) -> None:
        self._transport = transport
        self._url_for = url_for
        self._max_context_bytes = max_context_bytes
        self._items = items
        self._concurrency = concurrency
        self._max_pending = max_pending
        # The feeder sleeps when max_pending items are open and wakes only once a quarter of
        # them were handed over, then refills in one go: one task switch per batch, not per
        # item.
        self._refill_below = max_pending - max(1, max_pending // 4)
        self._timeout = timeout
        self._policy = policy
        self.flow = flow
        self._lanes: dict[str, deque[_Item]] = {}
        self._ready: asyncio.Queue[_Item] = asyncio.Queue()
        self._outcomes: asyncio.Queue[InjectOutcome | object] = asyncio.Queue()
        self._in_flight: dict[int, _Item] = {}
        self._room = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._input_error: BaseException | None = None
        self._input_exhausted = False
        self._pulled = 0
        self._open = 0  # pulled, not yet handed to the caller
        self._unfinished = 0  # valid items pulled and not finished
        self._started = 0.0
        self._stopped_at: float | None = None
        self._halted = False
        self.succeeded = 0
        self.failed = 0
        self.invalid = 0
        self.retries = 0
        self.possible_duplicates = 0
        self.leftovers: tuple[InjectOutcome, ...] = ()

    def summary(self) -> BulkSummary:
        """The counters now."""
        not_sent = sum(
            1
            for outcome in self.leftovers
            if isinstance(outcome.error, RunStoppedError) and not outcome.error.request_sent
        )
        interrupted = sum(
            1
            for outcome in self.leftovers
            if isinstance(outcome.error, RunStoppedError) and outcome.error.request_sent
        )
        end = self._stopped_at if self._stopped_at is not None else time.monotonic()
        return BulkSummary(
            items=self._pulled,
            succeeded=self.succeeded,
            failed=self.failed,
            invalid=self.invalid,
            retries=self.retries,
            retries_refused=self.flow.retries_refused,
            possible_duplicates=self.possible_duplicates,
            not_sent=not_sent,
            interrupted=interrupted,
            elapsed=end - self._started if self._started else 0.0,
        )

    async def run(self) -> AsyncGenerator[InjectOutcome, None]:
        """Start the tasks and yield outcomes as they finish; clean up however it ends."""
        self._started = time.monotonic()
        self._tasks.append(asyncio.create_task(self._feed(), name="osvi-bulk-feeder"))
        self._tasks.extend(
            asyncio.create_task(self._work(), name=f"osvi-bulk-worker-{number}")
            for number in range(self._concurrency)
        )
        try:
            while True:
                outcome = await self._outcomes.get()
                if not isinstance(outcome, InjectOutcome):
                    break
                self._open -= 1
                if self._open <= self._refill_below:
                    self._room.set()
                yield outcome
            if self._input_error is not None and not self._halted:
                raise self._input_error
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop the run (idempotent) and wait for its tasks to end.

        Everything the caller needs (leftovers, counts) is settled before the first await,
        so a second cancellation while waiting cannot lose it.
        """
        self._halt()
        tasks, self._tasks = self._tasks, []
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _halt(self) -> None:
        if self._halted:
            return
        self._halted = True
        for task in self._tasks:
            task.cancel()  # takes effect at each task's next step; nothing moves before that
        self._stopped_at = time.monotonic()
        leftovers = _drain_outcomes(self._outcomes)
        leftovers.extend(_stopped(item) for item in self._in_flight.values())
        queued = _drain_items(self._ready)
        for lane in self._lanes.values():
            queued.extend(lane)
        leftovers.extend(_stopped(item) for item in queued)
        self._in_flight.clear()
        self._lanes.clear()
        self.leftovers = tuple(sorted(leftovers, key=lambda outcome: outcome.index))
        self._outcomes.put_nowait(_END)  # wakes a consumer waiting in another task

    async def _feed(self) -> None:
        # Room is checked *before* an item is pulled, so stopping never strands one that was
        # taken from the caller's iterator but not yet counted.
        try:
            if isinstance(self._items, AsyncIterable):
                async_items = aiter(self._items)
                while True:
                    if self._open >= self._max_pending:
                        await self._wait_for_room()
                    try:
                        raw = await anext(async_items)
                    except StopAsyncIteration:
                        break
                    self._admit(raw)
            else:
                items = iter(self._items)
                while True:
                    if self._open >= self._max_pending:
                        await self._wait_for_room()
                    try:
                        raw = next(items)
                    except StopIteration:
                        break
                    self._admit(raw)
        except Exception as exc:
            self._input_error = exc
        self._input_exhausted = True
        if self._unfinished == 0:
            self._outcomes.put_nowait(_END)

    async def _wait_for_room(self) -> None:
        while self._open > self._refill_below:
            self._room.clear()
            await self._room.wait()

    def _admit(self, raw: object) -> None:
        index = self._pulled
        self._pulled += 1
        self._open += 1
        request: InjectRequest | None = None
        try:
            request = as_request(raw)
            session_id = check_session_id(request.session_id)
            body = encode_inject_body(check_context(request.context), self._max_context_bytes)
        except ClientValidationError as exc:
            self.failed += 1
            self.invalid += 1
            self._outcomes.put_nowait(InjectOutcome(index, request, ok=False, error=exc))
            return
        item = _Item(index, request, self._url_for(session_id), body)
        self._unfinished += 1
        lane = self._lanes.get(item.lane)
        if lane is None:
            self._lanes[item.lane] = deque()
            self._ready.put_nowait(item)
        else:
            lane.append(item)

    async def _work(self) -> None:
        while True:
            item = await self._ready.get()
            self._in_flight[item.index] = item
            result: InjectContextResult | None = None
            error: OsviError | None = None
            try:
                result = await send_inject_context(
                    self._transport,
                    url=item.url,
                    body=item.body,
                    session_id=item.session_id,
                    context=item.request.context,
                    timeout=self._timeout,
                    policy=self._policy,
                    gate=_ItemGate(self.flow, item),
                    already_maybe_applied=item.request.may_have_been_applied,
                )
            except OsviError as exc:
                error = exc
            except Exception as exc:
                error = OsviError(
                    f"Unexpected {type(exc).__name__} while sending: {exc}",
                    attempts=item.attempts_started,
                )
                error.may_have_been_applied = item.maybe_applied or item.on_the_wire
                error.__cause__ = exc
            del self._in_flight[item.index]
            self._finish(item, result, error)

    def _finish(
        self, item: _Item, result: InjectContextResult | None, error: OsviError | None
    ) -> None:
        lane = self._lanes[item.lane]
        if lane:
            self._ready.put_nowait(lane.popleft())
        else:
            del self._lanes[item.lane]
        if result is not None:
            self.succeeded += 1
            self.retries += result.attempts - 1
            self.possible_duplicates += result.possible_duplicate
            outcome = InjectOutcome(item.index, item.request, ok=True, result=result)
        else:
            self.failed += 1
            self.retries += max(0, (error.attempts if error is not None else 0) - 1)
            outcome = InjectOutcome(item.index, item.request, ok=False, error=error)
        self._outcomes.put_nowait(outcome)
        self._unfinished -= 1
        if self._input_exhausted and self._unfinished == 0:
            self._outcomes.put_nowait(_END)


def _stopped(item: _Item) -> InjectOutcome:
    """The outcome of an item the run was stopped before finishing."""
    attempts = item.attempts_started
    maybe = item.on_the_wire or item.maybe_applied
    if maybe:
        message = (
            f"The run was stopped during attempt {attempts} of this item; it may have been applied"
        )
    elif attempts:
        message = (
            f"The run was stopped after {attempts} attempt(s) of this item, none of which "
            "applied it"
        )
    else:
        message = "The run was stopped before this item was sent; it was not applied"
    error = RunStoppedError(message, request_sent=maybe, attempts=attempts)
    error.may_have_been_applied = maybe
    return InjectOutcome(item.index, item.request, ok=False, error=error)


def _drain_items(queue: asyncio.Queue[_Item]) -> list[_Item]:
    return [queue.get_nowait() for _ in range(queue.qsize())]


def _drain_outcomes(queue: asyncio.Queue[InjectOutcome | object]) -> list[InjectOutcome]:
    drained = (queue.get_nowait() for _ in range(queue.qsize()))
    return [outcome for outcome in drained if isinstance(outcome, InjectOutcome)]


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

    async def __anext__(self) -> InjectOutcome:
        return await anext(self._outcomes)

    async def aclose(self) -> None:
        """Stop the run: no new sends, in-flight requests are cancelled. Idempotent.

        Safe to call from another task than the one iterating: that one then sees the
        iteration end, and `leftovers` accounts for what did not finish.
        """
        if self._outcomes.ag_running:
            await self._engine.stop()  # the iterating task finishes the generator itself
        else:
            await self._outcomes.aclose()

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
        from the input. Empty after a run that was iterated to the end.
        """
        return self._engine.leftovers

    @property
    def circuit_state(self) -> str:
        """The run's circuit breaker: "closed", "open" or "half-open"."""
        return self._engine.flow.circuit_state
