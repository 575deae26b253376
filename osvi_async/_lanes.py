"""The items of a bulk run: their gate to the wire, how a stop reaches them, how they end.

`_bulk.py` schedules items (lanes, workers, the feeder); this module says what one item goes
through: the `ItemGate` it passes before each attempt (flow control, the `on_send` hook, a
stop), the `StopSignal` that cuts its waits short when the run drains, and the outcome it
gets when it is stopped or held. `refused_for_good` decides whether a failure holds the rest
of the item's session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import attrs

from osvi_async._adaptive import AdaptiveConcurrency
from osvi_async._flow import FlowControl
from osvi_async._retry import may_have_been_applied
from osvi_async._validation import (
    check_bool,
    check_context,
    check_identifier,
    check_session_id,
    encode_inject_body,
)
from osvi_async.errors import (
    APIStatusError,
    ClientValidationError,
    EngineRejectedError,
    ItemHeldError,
    OsviError,
    RunStoppedError,
)
from osvi_async.models import CustomerInjectRequest, InjectOutcome, InjectRequest

InjectItem = InjectRequest | CustomerInjectRequest | tuple[str, str]
"""What `inject_many` accepts per item."""

AnyRequest = InjectRequest | CustomerInjectRequest

OnSend = Callable[[int], None]
"""`inject_many(on_send=...)`: told an item's index right before its first attempt goes out."""

# Statuses in 4xx that a later attempt can fix: the token (401), a timeout (408), a rate limit.
_TRANSIENT_4XX = frozenset((401, 408, 429))


def refused_for_good(error: OsviError) -> bool:
    """Whether sending the same item again would be refused the same way.

    True for an invalid item (`ClientValidationError`), an engine refusal, and any 4xx but
    401, 408 and 429 (400, 403, 404, 409, 413, 422, ...), except a 404 without the API's
    JSON error body (a proxy's page: the URL is wrong, not the item). Such a failure does
    not hold the rest of its session in a bulk run, and `osvi-async bulk --resume` does not
    resend it. Anything else (retries exhausted on a transient failure, an open circuit, a
    stop, an unreadable answer, an unexpected error) may go away on a later attempt.
    """
    if isinstance(error, ClientValidationError | EngineRejectedError):
        return True
    if isinstance(error, APIStatusError):
        if error.status == 404 and error.code is None:
            # Not the API's JSON 404 (a proxy's page, a wrong base_url): a later run with
            # the right URL can apply it.
            return False
        return 400 <= error.status < 500 and error.status not in _TRANSIENT_4XX
    return False


_REQUESTS = (InjectRequest, CustomerInjectRequest)


def as_request(raw: object) -> AnyRequest:
    """Read one input item as a request, or raise ClientValidationError."""
    if isinstance(raw, tuple):  # the commonest form first: this runs once per item
        if len(raw) == 2:
            return InjectRequest(raw[0], raw[1])
    elif isinstance(raw, _REQUESTS):
        if raw.may_have_been_applied is not False:
            name = type(raw).__name__
            check_bool(f"{name}.may_have_been_applied", raw.may_have_been_applied)
        return raw
    raise ClientValidationError(
        f"each item must be an InjectRequest, a CustomerInjectRequest or a "
        f"(session_id, context) tuple, "
        f"got {type(raw).__name__}"
    )


class Item:
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

    def __init__(self, index: int, request: AnyRequest, url: str, body: bytes, lane: str) -> None:
        self.index = index
        self.request = request
        # Empty for an item addressed by customer until its session is looked up.
        self.session_id = request.session_id if isinstance(request, InjectRequest) else ""
        self.lane = lane
        self.url = url
        self.body = body
        self.attempts_started = 0
        self.on_the_wire = False  # an attempt was let through and has not ended yet
        self.maybe_applied = False  # an ended attempt may have applied the entry


def pair_lane(request: CustomerInjectRequest) -> str:
    """The lane (and hold) key of a (customer, agent) pair; a NUL never starts a session id."""
    return f"\0{request.customer_id}\0{request.agent_uuid}"


def checked_item(
    index: int,
    request: AnyRequest,
    url_for: Callable[[str], str],
    max_context_bytes: int,
) -> Item:
    """The item for a request, checked; raises ClientValidationError for an invalid one.

    A str subclass is copied to a plain str by the checks: from then on only the checked
    copy is used (lane key, URL, logs), never the caller's own methods.
    """
    context = check_context(request.context)
    body = encode_inject_body(context, max_context_bytes)
    if isinstance(request, InjectRequest):
        session_id = check_session_id(request.session_id)
        if session_id is not request.session_id or context is not request.context:
            request = attrs.evolve(request, session_id=session_id, context=context)
        # UUIDs are case-insensitive: two spellings of one session share one lane.
        return Item(index, request, url_for(session_id), body, session_id.lower())
    customer_id = check_identifier("customer_id", request.customer_id)
    agent_uuid = check_identifier("agent_uuid", request.agent_uuid)
    if (
        customer_id is not request.customer_id
        or agent_uuid is not request.agent_uuid
        or context is not request.context
    ):
        request = attrs.evolve(
            request, customer_id=customer_id, agent_uuid=agent_uuid, context=context
        )
    # Until its session is known, the item's lane is its pair's (see _addressing).
    return Item(index, request, "", body, pair_lane(request))


def _stop_error() -> RunStoppedError:
    # Raised inside the call loop; the worker replaces it with `stopped_outcome(item)`, which
    # knows what the item's attempts said.
    return RunStoppedError("The run is stopping; no new attempt starts", request_sent=False)


class StopSignal:
    """Whether a run is stopping, and the waits (circuit, rate limit, backoff) a stop cuts short.

    A wait wrapped in `interruptible` is registered with its task; `stop()` cancels those
    tasks, and the wrapper turns that cancellation (and only that one) into `RunStoppedError`,
    so the item ends at once instead of sleeping out its backoff. Cancellations from
    elsewhere (the run being closed) pass through untouched.
    """

    __slots__ = ("_interrupted", "_waiting", "stopping")

    def __init__(self) -> None:
        self.stopping = False
        self._waiting: set[asyncio.Task[object]] = set()
        self._interrupted: set[asyncio.Task[object]] = set()

    def stop(self) -> None:
        """From now on no attempt starts; end every interruptible wait now."""
        self.stopping = True
        for task in self._waiting - self._interrupted:
            self._interrupted.add(task)
            task.cancel()

    async def interruptible(self, waiting: Awaitable[object]) -> None:
        """Await `waiting`; raise RunStoppedError if the run stops before or while it runs."""
        if self.stopping:
            close = getattr(waiting, "close", None)
            if close is not None:
                close()  # a coroutine never awaited would warn
            raise _stop_error()
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            await waiting
        except asyncio.CancelledError:
            if task not in self._interrupted:
                raise
            self._interrupted.discard(task)
            if task.uncancel() > 0:
                raise  # also cancelled from elsewhere: that cancellation wins
            raise _stop_error() from None
        finally:
            self._waiting.discard(task)
        if task in self._interrupted:  # the wait swallowed our cancellation
            self._interrupted.discard(task)
            task.uncancel()
        if self.stopping:
            raise _stop_error()

    def sleeper(
        self, sleep: Callable[[float], Awaitable[None]]
    ) -> Callable[[float], Awaitable[None]]:
        """`sleep` (a retry policy's), cut short by a stop."""

        async def sleep_unless_stopped(seconds: float) -> None:
            await self.interruptible(sleep(seconds))

        return sleep_unless_stopped


class ItemGate:
    """The run's flow control, seen by the item `item` (implements `_call.AttemptGate`).

    It also notes which attempts of the item went out, calls the `on_send` hook before the
    first one, and lets no attempt or retry start once the run is stopping. A worker keeps
    one gate and points `item` at each item it sends, one at a time.
    """

    __slots__ = ("_flow", "_on_send", "_signal", "item")

    item: Item

    def __init__(self, flow: FlowControl, signal: StopSignal, on_send: OnSend | None) -> None:
        self._flow = flow
        self._signal = signal
        self._on_send = on_send

    def ready(self, number: int) -> bool:
        # A stopping run answers "not ready"; `wait` then raises RunStoppedError.
        if self._signal.stopping or not self._flow.ready(number):
            return False
        if number == 1 and self._on_send is not None:
            self._tell_on_send()
        item = self.item  # (what `wait` does too, written out: this runs once per item)
        item.attempts_started = number
        item.on_the_wire = True
        return True

    async def wait(self, number: int) -> None:
        await self._signal.interruptible(self._flow.wait(number))
        if number == 1 and self._on_send is not None:
            self._tell_on_send()
        item = self.item
        item.attempts_started = number
        item.on_the_wire = True

    def _tell_on_send(self) -> None:
        assert self._on_send is not None
        try:
            self._on_send(self.item.index)
        except Exception as exc:
            error = OsviError(f"Not sent: the on_send hook raised {type(exc).__name__}: {exc}")
            raise error from exc
        if self._signal.stopping:  # the hook stopped the run
            raise _stop_error()

    def after_attempt(self, error: OsviError | None, *, outage: bool) -> None:
        self.item.on_the_wire = False
        if error is not None and may_have_been_applied(error):
            self.item.maybe_applied = True
        self._flow.after_attempt(error, outage=outage)

    def attempt_abandoned(self) -> None:
        # Called when an attempt was cancelled mid-send (a stop snapshots the item before
        # that, while it is still on the wire) or was never sent (the deadline passed).
        self.item.on_the_wire = False
        self._flow.attempt_abandoned()

    def allow_retry(self) -> bool:
        # Raising (rather than refusing) makes the item a stopped one, not a failed one:
        # the attempt it would have retried is what says whether it may have been applied.
        if self._signal.stopping:
            raise _stop_error()
        return self._flow.allow_retry()


class AdaptiveItemGate(ItemGate):
    """An `ItemGate` for `concurrency="auto"`: each attempt also takes one of the run's
    adaptive slots before it goes out, and reports how it ended so the limit can adapt.

    The slot is taken after the flow-control wait (circuit, rate limit) and before the
    `on_send` hook, so the hook still runs right before the attempt goes out; it is held only
    while the attempt is on the wire, never during a backoff.
    """

    __slots__ = ("_adaptive", "_sent_at")

    def __init__(
        self,
        flow: FlowControl,
        signal: StopSignal,
        on_send: OnSend | None,
        adaptive: AdaptiveConcurrency,
    ) -> None:
        super().__init__(flow, signal, on_send)
        self._adaptive = adaptive
        self._sent_at: float | None = None  # when the attempt holding a slot took it

    def ready(self, number: int) -> bool:
        if self._signal.stopping or not self._flow.ready(number):
            return False
        if not self._adaptive.slots.try_take():
            return False
        self._holding(number)
        return True

    async def wait(self, number: int) -> None:
        await self._signal.interruptible(self._flow.wait(number))
        await self._signal.interruptible(self._adaptive.slots.take())
        self._holding(number)

    def _holding(self, number: int) -> None:
        """A slot is taken: tell the hook, mark the item on the wire."""
        self._sent_at = self._adaptive.clock()
        if number == 1 and self._on_send is not None:
            try:
                self._tell_on_send()
            except BaseException:
                self._sent_at = None  # nothing goes out: the slot is free again
                self._adaptive.slots.give_back()
                raise
        item = self.item
        item.attempts_started = number
        item.on_the_wire = True

    def after_attempt(self, error: OsviError | None, *, outage: bool) -> None:
        super().after_attempt(error, outage=outage)
        self._release(error)

    def attempt_abandoned(self) -> None:
        super().attempt_abandoned()
        if self._sent_at is not None:
            self._sent_at = None
            self._adaptive.slots.give_back()  # cancelled or unsent: no answer to learn from

    def _release(self, error: OsviError | None) -> None:
        sent_at, self._sent_at = self._sent_at, None
        if sent_at is not None:
            self._adaptive.attempt_ended(sent_at, error)


class LookupGate:
    """The run's flow control for a request that is not an item's own: a session lookup.

    Lookups are paced, paused and budgeted like injects (rate limit, circuit breaker, retry
    budget), and none starts once the run is stopping; no `on_send`, no item bookkeeping.
    """

    __slots__ = ("_flow", "_signal")

    def __init__(self, flow: FlowControl, signal: StopSignal) -> None:
        self._flow = flow
        self._signal = signal

    def ready(self, number: int) -> bool:
        return not self._signal.stopping and self._flow.ready(number)

    async def wait(self, number: int) -> None:
        await self._signal.interruptible(self._flow.wait(number))

    def after_attempt(self, error: OsviError | None, *, outage: bool) -> None:
        self._flow.after_attempt(error, outage=outage)

    def attempt_abandoned(self) -> None:
        self._flow.attempt_abandoned()

    def allow_retry(self) -> bool:
        if self._signal.stopping:
            raise _stop_error()
        return self._flow.allow_retry()


def stopped_outcome(item: Item, *, maybe_applied: bool = False) -> InjectOutcome:
    """The outcome of an item the run was stopped before finishing.

    `maybe_applied` adds what the call loop knew (an earlier attempt's ambiguity); the
    request's own flag (a resend of a maybe-applied entry) is always carried over.
    """
    attempts = item.attempts_started
    sent_maybe = item.on_the_wire or item.maybe_applied or maybe_applied
    if sent_maybe:
        message = (
            f"The run was stopped during or after attempt {attempts} of this item; "
            "it may have been applied"
        )
    elif attempts:
        message = (
            f"The run was stopped after {attempts} attempt(s) of this item, none of which "
            "applied it"
        )
    else:
        message = "The run was stopped before this item was sent; it was not applied"
    error = RunStoppedError(message, request_sent=sent_maybe, attempts=attempts)
    error.may_have_been_applied = sent_maybe or item.request.may_have_been_applied
    return InjectOutcome(item.index, item.request, ok=False, error=error)


def held_message(request: AnyRequest, waiting_for: int) -> str:
    """What an item held behind item `waiting_for` of its session says."""
    lane = "session" if isinstance(request, InjectRequest) else "customer and agent"
    return (
        f"Not sent: item {waiting_for} of the same {lane} failed first, and sending this "
        f"one would put the {lane}'s entries out of input order; resend it after that item"
    )


def held_outcome(index: int, request: AnyRequest, waiting_for: int) -> InjectOutcome:
    """The outcome of an item not sent because item `waiting_for` of its session failed."""
    error = ItemHeldError(held_message(request, waiting_for), waiting_for=waiting_for)
    error.may_have_been_applied = request.may_have_been_applied
    return InjectOutcome(index, request, ok=False, error=error)
