"""The duplicate-flag rule on synthetic buckets, and the retry loop's respect for cancellation."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from osvi_async import InjectContextResult, OsviClient, RetryPolicy
from osvi_async._endpoints import flag_possible_duplicate
from tests.support import BASE_URL, INJECT_URL, SESSION_ID, TOKEN

ENTRY = "summary"


def flagged(*bucket: str, settled: bool = True) -> bool:
    """Whether the rule flags a result with this bucket for ENTRY."""
    result = InjectContextResult(session_id=SESSION_ID, context=bucket, attempts=2)
    return flag_possible_duplicate(result, ENTRY, settled=settled).possible_duplicate


@pytest.mark.parametrize(
    ("bucket", "expected"),
    [
        ((ENTRY,), False),
        (("a", "b", ENTRY), False),
        (("a", "b", "c", ENTRY), False),
        ((ENTRY, ENTRY), True),
        ((ENTRY, "B", ENTRY), True),  # another writer between the two copies
        ((ENTRY, "b", "c", ENTRY), True),
        (("a", "b", "c", "d", ENTRY), True),  # full: an earlier copy may have scrolled out
        (("a", "b", "c", "d", "e"), True),  # full, entry already pushed out
        (("a", "b"), True),  # entry absent from a short bucket
        ((), True),
    ],
)
def test_flag_rule_on_synthetic_buckets(bucket: tuple[str, ...], expected: bool) -> None:
    """Flagged unless the bucket is not full and holds the entry exactly once."""
    assert flagged(*bucket) is expected


@pytest.mark.parametrize("bucket", [(ENTRY,), ("a", "b", ENTRY), ("a", "b", "c", ENTRY)])
def test_unsettled_attempt_is_flagged_whatever_the_bucket(bucket: tuple[str, ...]) -> None:
    """A bucket read before a maybe-applied attempt settled rules nothing out."""
    assert flagged(*bucket, settled=False) is True


def test_flagging_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A flagged result is logged at WARNING, naming the session."""
    with caplog.at_level(logging.WARNING, logger="osvi_async"):
        assert flagged(ENTRY, "B", ENTRY)
    assert SESSION_ID in caplog.text
    assert "possible_duplicate" in caplog.text


async def test_a_200_without_the_entry_is_accepted_and_logged(
    caplog: pytest.LogCaptureFixture, mocked: aioresponses
) -> None:
    """The API said it appended: the result is returned, unflagged, and a warning logged."""
    body = {"success": True, "data": {"session_id": SESSION_ID, "context": ["a", "b"]}}
    with caplog.at_level(logging.WARNING, logger="osvi_async"):
        mocked.post(INJECT_URL, payload=body)
        async with OsviClient(TOKEN, base_url=BASE_URL) as client:
            result = await client.inject_context(SESSION_ID, ENTRY)
    assert (result.context, result.possible_duplicate) == (("a", "b"), False)
    assert "does not hold the entry" in caplog.text


async def test_a_200_without_the_entry_after_an_ambiguous_attempt_is_flagged(
    mocked: aioresponses,
) -> None:
    """The same answer on a resend of a maybe-applied entry: flagged possible_duplicate."""
    body = {"success": True, "data": {"session_id": SESSION_ID, "context": ["a", "b"]}}
    mocked.post(INJECT_URL, payload=body)
    async with OsviClient(TOKEN, base_url=BASE_URL) as client:
        result = await client.inject_context(SESSION_ID, ENTRY, may_have_been_applied=True)
    assert result.possible_duplicate is True
    assert len(mocked.requests[("POST", URL(INJECT_URL))]) == 1


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        # The API relayed the engine's failure: settled, so a bucket holding it once clears it.
        (
            {"status": 502, "payload": {"success": False, "error": "Python engine returned 500"}},
            False,
        ),
        # A proxy's page: the request may still be on its way to the API.
        ({"status": 502, "body": "<html>Bad Gateway</html>"}, True),
        ({"status": 504, "payload": {"success": False, "error": "gateway timeout"}}, True),
    ],
)
async def test_flag_after_a_maybe_applied_5xx_depends_on_whether_it_settled(
    mocked: aioresponses, fast_retry: RetryPolicy, first: dict[str, Any], expected: bool
) -> None:
    """A maybe-applied 5xx then a bucket holding the entry once: flagged unless it settled."""
    body = {"success": True, "data": {"session_id": SESSION_ID, "context": ["a", ENTRY]}}
    mocked.post(INJECT_URL, **first)
    mocked.post(INJECT_URL, payload=body)
    async with OsviClient(TOKEN, base_url=BASE_URL, retry=fast_retry) as client:
        result = await client.inject_context(SESSION_ID, ENTRY)
    assert (result.attempts, result.possible_duplicate) == (2, expected)
    assert len(mocked.requests[("POST", URL(INJECT_URL))]) == 2


async def test_retry_loop_never_starts_an_attempt_for_a_cancelling_task(
    mocked: aioresponses,
) -> None:
    """A cancel swallowed by the backoff sleep still ends the call: no second attempt."""
    mocked.post(INJECT_URL, exception=TimeoutError())
    mocked.post(INJECT_URL, payload={"success": True, "data": {"context": ["x"]}})

    async def swallowing_sleep(seconds: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # the cancel arrives; this sleep then returns without awaiting

    policy = RetryPolicy(sleep=swallowing_sleep, random=lambda: 0.5)
    async with OsviClient(TOKEN, base_url=BASE_URL, retry=policy) as client:
        task = asyncio.create_task(client.inject_context(SESSION_ID, "x"))
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(mocked.requests[("POST", URL(INJECT_URL))]) == 1
