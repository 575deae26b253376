"""The customer -> session cache on its own: expiry, eviction, shared lookups, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from osvi_async import APITimeoutError, InjectContextResult, NotFoundError, ResponseDecodeError
from osvi_async._sessions import SessionCache, inject_for_customer

S1 = "00000000-0000-4000-8000-000000000001"
S2 = "00000000-0000-4000-8000-000000000002"
S3 = "00000000-0000-4000-8000-000000000003"
OLD = "00000000-0000-4000-8000-0000000000aa"
NEW = "00000000-0000-4000-8000-0000000000bb"


class Lookups:
    """A lookup that answers from a table, counts calls, and can be held open."""

    def __init__(self, answers: dict[tuple[str, str], str]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, customer_id: str, agent_uuid: str) -> str:
        self.calls.append((customer_id, agent_uuid))
        await self.gate.wait()
        answer = self.answers.get((customer_id, agent_uuid))
        if answer is None:
            raise NotFoundError("no active session", status=404, code="session_not_found", body="")
        return answer


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def not_found(code: str = "session_not_found") -> NotFoundError:
    """A 404 as the API sends it."""
    return NotFoundError("gone", status=404, code=code, body="")


async def test_entries_expire_after_the_ttl() -> None:
    """A cached pair is reused until its ttl has passed, then looked up again."""
    lookups, clock = Lookups({("c", "a"): S1}), Clock()
    cache = SessionCache(ttl=30.0, size=10, clock=clock)
    assert await cache.session_id("c", "a", lookups) == S1
    clock.now = 29.9
    assert await cache.session_id("c", "a", lookups) == S1
    assert len(lookups.calls) == 1
    clock.now = 30.0
    assert await cache.session_id("c", "a", lookups) == S1
    assert len(lookups.calls) == 2


async def test_the_least_recently_used_pair_goes_first() -> None:
    """With size 2, using a pair keeps it; the one not used since is evicted."""
    lookups = Lookups({("c1", "a"): S1, ("c2", "a"): S2, ("c3", "a"): S3})
    cache = SessionCache(ttl=60.0, size=2)
    await cache.session_id("c1", "a", lookups)
    await cache.session_id("c2", "a", lookups)
    await cache.session_id("c1", "a", lookups)  # c1 is now the most recently used
    await cache.session_id("c3", "a", lookups)  # evicts c2
    assert len(cache) == 2
    await cache.session_id("c1", "a", lookups)
    assert lookups.calls.count(("c1", "a")) == 1
    await cache.session_id("c2", "a", lookups)
    assert lookups.calls.count(("c2", "a")) == 2


async def test_waiters_share_a_failing_lookup_and_nothing_is_cached() -> None:
    """Every caller waiting on a lookup that fails gets its error; the next call retries."""
    lookups = Lookups({})
    lookups.gate.clear()
    cache = SessionCache(ttl=60.0, size=10)
    tasks = [asyncio.create_task(cache.session_id("c", "a", lookups)) for _ in range(5)]
    await asyncio.sleep(0)
    lookups.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(result, NotFoundError) for result in results)
    assert len(lookups.calls) == 1
    lookups.answers[("c", "a")] = S1
    assert await cache.session_id("c", "a", lookups) == S1
    assert len(lookups.calls) == 2


async def test_cancelling_the_looking_up_task_does_not_cancel_the_waiters() -> None:
    """The waiters were not cancelled: they look the pair up themselves and get the answer."""
    lookups = Lookups({("c", "a"): S1})
    lookups.gate.clear()
    cache = SessionCache(ttl=60.0, size=10)
    first = asyncio.create_task(cache.session_id("c", "a", lookups))
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(cache.session_id("c", "a", lookups)) for _ in range(3)]
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    lookups.gate.set()
    assert await asyncio.gather(*waiters) == [S1, S1, S1]
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(lookups.calls) == 2  # the cancelled one, and one shared by the waiters


async def test_a_cancelled_waiter_leaves_the_lookup_running() -> None:
    """Cancelling one waiter cancels only that waiter."""
    lookups = Lookups({("c", "a"): S1})
    lookups.gate.clear()
    cache = SessionCache(ttl=60.0, size=10)
    first = asyncio.create_task(cache.session_id("c", "a", lookups))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(cache.session_id("c", "a", lookups))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    lookups.gate.set()
    assert await first == S1
    assert len(lookups.calls) == 1


async def test_forget_drops_every_pair_in_the_session() -> None:
    """Closing a session forgets it for every pair that pointed at it."""
    lookups = Lookups({("c1", "a"): S1, ("c2", "a"): S1, ("c3", "a"): S3})
    cache = SessionCache(ttl=60.0, size=10)
    for customer in ("c1", "c2", "c3"):
        await cache.session_id(customer, "a", lookups)
    cache.forget(S1)
    assert len(cache) == 1


async def test_a_closed_session_is_looked_up_once_more() -> None:
    """404 session_not_found: one more lookup, and the send goes to the new session."""
    lookups = Lookups({("c", "a"): OLD})
    cache = SessionCache(ttl=60.0, size=10)
    sent: list[str] = []

    async def send(session_id: str) -> InjectContextResult:
        sent.append(session_id)
        if session_id == OLD:
            lookups.answers[("c", "a")] = NEW
            error = not_found()
            error.attempts = 1
            raise error
        return InjectContextResult(session_id=session_id, context=("x",))

    result = await inject_for_customer(cache, "c", "a", lookups, send)
    assert result.session_id == NEW
    assert result.attempts == 2  # the request to the closed session counts too
    assert sent == [OLD, NEW]


async def test_a_looked_up_id_that_is_not_a_uuid_never_reaches_a_path() -> None:
    """An active session the API names "../admin" is refused, not sent to."""
    lookups = Lookups({("c", "a"): "../admin?x=1"})
    cache = SessionCache(ttl=60.0, size=10)
    sent: list[str] = []

    async def send(session_id: str) -> InjectContextResult:
        sent.append(session_id)
        raise AssertionError("sent")

    with pytest.raises(ResponseDecodeError, match="not a session UUID"):
        await inject_for_customer(cache, "c", "a", lookups, send)
    assert sent == []
    assert len(cache) == 0


@pytest.mark.parametrize(
    ("error", "lookups_after"),
    [(not_found("not_found"), 1), (not_found(), 2)],
    ids=["other-404-code", "same-session-again"],
)
async def test_no_loop_on_a_404_that_a_new_lookup_cannot_fix(
    error: NotFoundError, lookups_after: int
) -> None:
    """Another 404 code is raised as is; a lookup naming the same session raises the 404."""
    lookups = Lookups({("c", "a"): S1})
    cache = SessionCache(ttl=60.0, size=10)

    async def send(session_id: str) -> InjectContextResult:
        raise error

    with pytest.raises(NotFoundError):
        await inject_for_customer(cache, "c", "a", lookups, send)
    assert len(lookups.calls) == lookups_after


async def test_a_404_after_a_maybe_applied_attempt_is_not_resent() -> None:
    """If an earlier attempt may have applied it, the entry is not sent to another session."""
    lookups = Lookups({("c", "a"): S1})
    cache = SessionCache(ttl=60.0, size=10)
    error = not_found()
    error.may_have_been_applied = True

    async def send(session_id: str) -> InjectContextResult:
        raise error

    with pytest.raises(NotFoundError):
        await inject_for_customer(cache, "c", "a", lookups, send)
    assert len(lookups.calls) == 1


async def test_a_waiter_gives_up_after_its_own_limit() -> None:
    """A caller with a short budget does not wait out the lookup another caller started."""
    lookups = Lookups({("c", "a"): S1})
    lookups.gate.clear()
    cache = SessionCache(ttl=60.0, size=10)
    first = asyncio.create_task(cache.session_id("c", "a", lookups))
    await asyncio.sleep(0)
    with pytest.raises(APITimeoutError, match="waiting for the session lookup") as caught:
        await cache.session_id("c", "a", lookups, wait_limit=0.01)
    assert caught.value.request_sent is False
    lookups.gate.set()
    assert await first == S1


async def test_forget_matches_session_ids_whatever_their_case() -> None:
    """Closing "ABC..." forgets a pair cached as "abc...": UUIDs are case-insensitive."""
    lookups = Lookups({("c", "a"): S1})
    cache = SessionCache(ttl=60.0, size=10)
    await cache.session_id("c", "a", lookups)
    cache.forget(S1.upper())
    assert len(cache) == 0


async def test_a_closed_session_is_never_cached_again() -> None:
    """A lookup that answers after the close cannot bring the closed session back."""
    lookups = Lookups({("c", "a"): S1})
    cache = SessionCache(ttl=60.0, size=10)
    await cache.session_id("c", "a", lookups)
    cache.forget(S1)
    cache.remember("c", "a", S1.upper())  # a late answer naming it
    assert cache.cached("c", "a") is None
    cache.remember("c", "a", S2)
    assert cache.cached("c", "a") == S2
