"""Which session a (customer, agent) pair is talking in: a small cache in front of the lookup.

Programs that react to events (a voice call ended) know the customer and the agent, not the
session id. Looking the session up before every injection doubles the requests, so the answer
is kept for a short time (`ttl`), for at most `size` pairs (least recently used first out),
and concurrent lookups of one pair share a single request. The cache can be wrong in one way
only: the session was closed since. Then the API answers 404 `session_not_found`, and
`inject_for_customer` looks the pair up again and injects there (a bounded number of times).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final

import attrs

from osvi_async._decode import escape_controls
from osvi_async._validation import is_session_id
from osvi_async.errors import APITimeoutError, NotFoundError, ResponseDecodeError
from osvi_async.models import InjectContextResult

SESSION_CHASES: Final = 3
"""How many times one injection follows its pair to a new session after meeting a closed
one: enough for a session closed and reopened a few times during a bulk run, bounded so that
churn faster than a lookup and an injection ends in `NotFoundError`, not a loop."""

Lookup = Callable[[str, str], Awaitable[str]]
"""(customer_id, agent_uuid) -> the id of their active session; raises NotFoundError."""


class SessionCache:
    """Active session ids by (customer_id, agent_uuid), kept `ttl` seconds, at most `size`."""

    __slots__ = ("_clock", "_closed", "_entries", "_pending", "size", "ttl")

    def __init__(
        self, *, ttl: float, size: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self._pending: dict[tuple[str, str], asyncio.Future[str]] = {}
        # Sessions known to be closed (closing is for good), lower-cased, at most `size`: a
        # lookup that started before the close and answers after it must not bring one back.
        self._closed: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def cached(self, customer_id: str, agent_uuid: str) -> str | None:
        """The pair's session id if it is cached and fresh, without looking anything up."""
        key = (customer_id, agent_uuid)
        cached = self._entries.get(key)
        if cached is None or self._clock() >= cached[1]:
            return None
        self._entries.move_to_end(key)
        return cached[0]

    async def session_id(
        self,
        customer_id: str,
        agent_uuid: str,
        lookup: Lookup,
        *,
        wait_limit: float | None = None,
    ) -> str:
        """The pair's active session id.

        A pair not cached (or expired) is looked up with `lookup` (the caller's, so that its
        timeout and retry policy apply); callers asking for it meanwhile wait for that one
        lookup instead of sending their own (and make their own if the task that made it was
        cancelled), but no longer than their own `wait_limit` seconds: a caller with a short
        deadline does not wait out another caller's long one.
        """
        key = (customer_id, agent_uuid)
        while True:
            cached = self._entries.get(key)
            if cached is not None:
                session_id, expires = cached
                if self._clock() < expires:
                    self._entries.move_to_end(key)
                    return session_id
                del self._entries[key]
            pending = self._pending.get(key)
            if pending is None:
                return await self._resolve(key, lookup)
            try:
                return await asyncio.wait_for(asyncio.shield(pending), wait_limit)
            except TimeoutError:
                raise APITimeoutError(
                    f"Gave up after {wait_limit:g} s waiting for the session lookup another "
                    f"call started for customer {customer_id!r} with agent {agent_uuid!r}",
                    request_sent=False,
                ) from None
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we were cancelled, not the lookup we waited for
            # The lookup's own task was cancelled: look again (another caller may have
            # cached the answer meanwhile).

    async def _resolve(self, key: tuple[str, str], lookup: Lookup) -> str:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            session_id = await lookup(*key)
        except BaseException as exc:
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning without waiters
            else:
                future.cancel()
            raise
        else:
            future.set_result(session_id)
            self.remember(key[0], key[1], session_id)
            return session_id
        finally:
            del self._pending[key]

    def remember(self, customer_id: str, agent_uuid: str, session_id: str) -> None:
        """Cache what an answer said (a session just created, a message's session).

        Only a session UUID is kept: the id goes into request paths later, and one the API
        made up otherwise is not ours to put there.
        """
        if not is_session_id(session_id) or session_id.lower() in self._closed:
            return
        key = (customer_id, agent_uuid)
        self._entries[key] = (session_id, self._clock() + self.ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, session_id: str) -> None:
        """`session_id` was closed: drop every pair cached in it, and never cache it again."""
        gone = session_id.lower()  # UUIDs are case-insensitive
        self._closed[gone] = None
        self._closed.move_to_end(gone)
        while len(self._closed) > self.size:
            self._closed.popitem(last=False)
        stale = [key for key, (cached, _) in self._entries.items() if cached.lower() == gone]
        for key in stale:
            del self._entries[key]


async def inject_for_customer(
    cache: SessionCache,
    customer_id: str,
    agent_uuid: str,
    lookup: Lookup,
    send: Callable[[str], Awaitable[InjectContextResult]],
    *,
    known: str | None = None,
    wait_limit: float | None = None,
) -> InjectContextResult:
    """`send(session_id)` to the pair's active session (`known` when it was looked up
    already), looking it up again each time the one used turns out closed (404
    `session_not_found`, certainly not applied), up to `SESSION_CHASES` times.

    A looked-up id that is not a session UUID is refused (`ResponseDecodeError`) rather than
    put into a request path.
    """
    if known is None:
        known = await cache.session_id(customer_id, agent_uuid, lookup, wait_limit=wait_limit)
    session_id = _usable(known)
    spent = 0  # attempts that met a closed session
    for chase in range(SESSION_CHASES + 1):
        try:
            result = await send(session_id)
        except NotFoundError as error:
            if (
                error.code != "session_not_found"
                or error.may_have_been_applied
                or chase == SESSION_CHASES
            ):
                raise
            cache.forget(session_id)  # 404 session_not_found: closed, for good
            fresh = _usable(
                await cache.session_id(customer_id, agent_uuid, lookup, wait_limit=wait_limit)
            )
            if fresh.lower() == session_id.lower():
                raise  # the API still names the session it says is gone: do not loop
            spent += error.attempts
            session_id = fresh
        else:
            return attrs.evolve(result, attempts=result.attempts + spent) if spent else result
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _usable(session_id: str) -> str:
    if is_session_id(session_id):
        return session_id
    raise not_a_session_id(session_id)


def not_a_session_id(session_id: str) -> ResponseDecodeError:
    """The error for an active session the API named with something that is not a UUID."""
    shown = escape_controls(session_id[:60])
    error = ResponseDecodeError(
        f"The API named {shown!r} as the active session, which is not a session UUID; "
        "refusing to put it into a request path",
        status=200,
        body="",
    )
    error.attempts = 1  # the lookup that answered so
    return error
