"""Bulk items addressed by customer: their session is looked up before they join a lane.

A bulk run keeps each session's entries in input order by sending them through one lane per
session. An item that names a customer and agent (`CustomerInjectRequest`) does not say which
session it is for until its lookup answers, and any session item after it might be for the
same session. So items leave this window in input order: an item waits while any earlier
item is still being looked up. Lookups run ahead of that order (up to `limit` at once, one per
pair thanks to the session cache), so a run of many customers is not one lookup at a time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from osvi_async._lanes import Item
from osvi_async._sessions import Lookup, SessionCache, not_a_session_id
from osvi_async._validation import is_session_id
from osvi_async.errors import OsviError
from osvi_async.models import CustomerInjectRequest

Resolved = tuple[Item, OsviError | None]
"""An item leaving the window: its session is set (error None), or why it has none."""


class AddressWindow:
    """Items in input order, the ones addressed by customer with their lookups under way."""

    __slots__ = (
        "_cache",
        "_limit",
        "_look_up",
        "_lookups",
        "_on_ready",
        "_url_for",
        "_waiting",
        "empty",
    )

    def __init__(
        self,
        cache: SessionCache,
        look_up: Lookup,
        url_for: Callable[[str], str],
        *,
        limit: int,
        on_ready: Callable[[], None],
    ) -> None:
        self._cache = cache
        # Told when a lookup ends, so that its item moves on even if the input is idle (a
        # worker's queue, say): waiting for the next item to be pulled could wait for ever.
        self._on_ready = on_ready
        self._look_up = look_up
        self._url_for = url_for
        self._limit = limit
        self._waiting: deque[tuple[Item, asyncio.Task[str] | None]] = deque()
        self._lookups = 0  # tasks in _waiting not yet done
        # Whether no item is waiting: an attribute, not a property, as a run reads it once
        # per item; kept in step with _waiting by the three methods that change it.
        self.empty = True

    @property
    def full(self) -> bool:
        """Whether as many lookups run as allowed: wait for the first before pulling more."""
        return self._lookups >= self._limit

    def add(self, item: Item) -> None:
        """Queue an item behind the ones already waiting; start its lookup if it needs one."""
        request = item.request
        task: asyncio.Task[str] | None = None
        if isinstance(request, CustomerInjectRequest):
            cached = self._cache.cached(request.customer_id, request.agent_uuid)
            if cached is not None:
                self._address(item, cached)
            else:
                task = asyncio.create_task(
                    self._cache.session_id(request.customer_id, request.agent_uuid, self._look_up),
                    name="osvi-bulk-lookup",
                )
                self._lookups += 1
                task.add_done_callback(self._lookup_done)
        self._waiting.append((item, task))
        self.empty = False

    def ready(self) -> list[Resolved]:
        """Take the items at the front whose address is known, in input order."""
        out: list[Resolved] = []
        while self._waiting:
            item, task = self._waiting[0]
            if task is not None and not task.done():
                break
            self._waiting.popleft()
            out.append((item, None if task is None else self._settle(item, task)))
        self.empty = not self._waiting
        return out

    async def wait(self) -> None:
        """Wait until the first waiting item's lookup has ended."""
        if self._waiting:
            task = self._waiting[0][1]
            if task is not None and not task.done():
                await asyncio.wait((task,))

    def take_all(self) -> list[Item]:
        """Every waiting item, taken out (the run stops); their lookups are cancelled."""
        items = []
        while self._waiting:
            item, task = self._waiting.popleft()
            if task is not None:
                task.cancel()
            items.append(item)
        self.empty = True
        return items

    def _lookup_done(self, task: asyncio.Task[str]) -> None:
        self._lookups -= 1
        if not task.cancelled():
            task.exception()  # retrieved here: take_all may never ask for it
            self._on_ready()

    def _settle(self, item: Item, task: asyncio.Task[str]) -> OsviError | None:
        if task.cancelled():
            return OsviError("The session lookup for this item was cancelled")
        error = task.exception()
        if error is None:
            session_id = task.result()
            if is_session_id(session_id):
                self._address(item, session_id)
                return None
            return not_a_session_id(session_id)
        if isinstance(error, OsviError):
            return error
        wrapped = OsviError(f"Unexpected {type(error).__name__} while looking the session up")
        wrapped.__cause__ = error
        return wrapped

    def _address(self, item: Item, session_id: str) -> None:
        item.session_id = session_id
        item.url = self._url_for(session_id)
        item.lane = session_id.lower()
