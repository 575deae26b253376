"""OsviClient.inject_context against aioresponses: statuses, error shapes, retries, options."""

from __future__ import annotations

import gc
import json
import logging
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from osvi_async import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ClientValidationError,
    EngineError,
    EngineRejectedError,
    InjectContextResult,
    NotFoundError,
    OsviClient,
    OsviError,
    RateLimitError,
    RequestTooLargeError,
    ResponseDecodeError,
    RetryEvent,
    RetryPolicy,
    ServerError,
)
from tests.support import BASE_URL, INJECT_URL, SESSION_ID, TOKEN, FakeSleep

OK_BODY = {"success": True, "data": {"session_id": SESSION_ID, "context": ["a", "b"]}}
ENGINE_DOWN = {"success": False, "error": "Python engine unreachable", "upstream_body": None}


def sent_requests(mock: aioresponses) -> list[Any]:
    """Every request aioresponses saw for the inject URL, in order."""
    return list(mock.requests.get(("POST", URL(INJECT_URL)), []))


async def test_success_decodes_bucket_and_sends_token_and_json(
    client: OsviClient, mocked: aioresponses
) -> None:
    """A 200 becomes an InjectContextResult; the request carries the token and the JSON body."""
    mocked.post(INJECT_URL, payload=OK_BODY)
    result = await client.inject_context(SESSION_ID, "b")
    assert result == InjectContextResult(session_id=SESSION_ID, context=("a", "b"), attempts=1)
    [request] = sent_requests(mocked)
    assert request.kwargs["headers"]["API-Token"] == TOKEN
    assert request.kwargs["headers"]["Content-Type"] == "application/json"
    assert json.loads(request.kwargs["data"]) == {"context": "b"}


async def test_unicode_context_is_sent_as_utf8(client: OsviClient, mocked: aioresponses) -> None:
    """Non-ASCII text goes out as UTF-8 JSON, byte-exact."""
    mocked.post(INJECT_URL, payload=OK_BODY)
    await client.inject_context(SESSION_ID, "Zoë 👋 — 電話")
    [request] = sent_requests(mocked)
    assert json.loads(request.kwargs["data"].decode("utf-8")) == {"context": "Zoë 👋 — 電話"}


@pytest.mark.parametrize(
    ("status", "body", "error_class", "code"),
    [
        (400, {"success": False, "error": "context_required"}, BadRequestError, "context_required"),
        (401, {"success": False, "error": "unauthorized"}, AuthenticationError, "unauthorized"),
        (404, {"success": False, "error": "session_not_found"}, NotFoundError, "session_not_found"),
        (
            422,
            {"success": False, "errors": ["context is required", "id is invalid"]},
            BadRequestError,
            "context is required; id is invalid",
        ),
        (409, {"success": False, "error": "conflict"}, APIStatusError, "conflict"),
        (500, {"success": False, "error": "internal"}, ServerError, "internal"),
    ],
)
async def test_error_status_maps_to_class_without_retry(
    client: OsviClient,
    mocked: aioresponses,
    fake_sleep: FakeSleep,
    status: int,
    body: dict[str, Any],
    error_class: type[APIStatusError],
    code: str,
) -> None:
    """Non-retryable statuses raise their class at once with status, code and excerpt."""
    mocked.post(INJECT_URL, status=status, payload=body)
    with pytest.raises(APIStatusError) as caught:
        await client.inject_context(SESSION_ID, "x")
    error = caught.value
    assert type(error) is error_class
    assert (error.status, error.code, error.attempts) == (status, code, 1)
    assert error.session_id == SESSION_ID
    assert code.split(";", maxsplit=1)[0] in error.body
    assert f"HTTP {status}" in str(error)
    assert len(sent_requests(mocked)) == 1
    assert fake_sleep.delays == []


async def test_502_502_200_succeeds_on_third_attempt(
    client: OsviClient, mocked: aioresponses, fake_sleep: FakeSleep
) -> None:
    """Engine errors are retried with full-jitter exponential waits; attempts is reported."""
    mocked.post(INJECT_URL, status=502, payload=ENGINE_DOWN)
    mocked.post(INJECT_URL, status=502, payload=ENGINE_DOWN)
    mocked.post(INJECT_URL, payload=OK_BODY)
    result = await client.inject_context(SESSION_ID, "b")
    assert result.attempts == 3
    assert len(sent_requests(mocked)) == 3
    assert fake_sleep.delays == [0.25, 0.5]  # half of 0.5 s, then half of 1.0 s


async def test_retries_exhausted_raise_last_engine_error_with_attempts(
    client: OsviClient, mocked: aioresponses, fake_sleep: FakeSleep
) -> None:
    """After max_retries the caller gets the real EngineError, never a tenacity type."""
    for _ in range(4):
        mocked.post(INJECT_URL, status=502, payload=ENGINE_DOWN)
    with pytest.raises(EngineError) as caught:
        await client.inject_context(SESSION_ID, "b")
    assert type(caught.value) is EngineError
    assert caught.value.attempts == 4
    assert caught.value.upstream_body is None
    assert caught.value.code == "Python engine unreachable"
    assert "after 4 attempts" in str(caught.value)
    assert len(sent_requests(mocked)) == 4
    assert fake_sleep.delays == [0.25, 0.5, 1.0]


@pytest.mark.parametrize(
    "body",
    [
        {
            "success": False,
            "error": "Python engine returned 500",
            "upstream_body": {"state": "rejected", "reason": "tell_not_allowed_during_takeover"},
        },
        {
            "success": False,
            "error": "Python engine returned 422 for POST /v1/chat/session/x/inject_context",
            "upstream_body": None,
        },
    ],
)
async def test_engine_refusal_is_not_retried(
    client: OsviClient, mocked: aioresponses, body: dict[str, Any]
) -> None:
    """A 502 that says the engine refused (state rejected, or an upstream 4xx) fails at once."""
    mocked.post(INJECT_URL, status=502, payload=body)
    with pytest.raises(EngineRejectedError) as caught:
        await client.inject_context(SESSION_ID, "b")
    assert caught.value.attempts == 1
    assert caught.value.upstream_body == body["upstream_body"]
    assert len(sent_requests(mocked)) == 1


async def test_engine_reason_is_in_message(client: OsviClient, mocked: aioresponses) -> None:
    """The engine's reason is quoted for a person and kept as data in upstream_body."""
    upstream = {"state": "rejected", "reason": "tell_not_allowed_during_takeover"}
    mocked.post(
        INJECT_URL, status=502, payload={"success": False, "error": "x", "upstream_body": upstream}
    )
    with pytest.raises(EngineRejectedError, match="tell_not_allowed_during_takeover"):
        await client.inject_context(SESSION_ID, "b")


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(408, APIStatusError), (429, RateLimitError), (503, ServerError), (504, ServerError)],
)
async def test_transient_statuses_are_retried(
    client: OsviClient,
    mocked: aioresponses,
    status: int,
    error_class: type[APIStatusError],
) -> None:
    """408, 429, 503 and 504 are retried, and their final error keeps its class."""
    for _ in range(4):
        mocked.post(INJECT_URL, status=status, body="busy")
    with pytest.raises(error_class) as caught:
        await client.inject_context(SESSION_ID, "b")
    assert caught.value.status == status
    assert caught.value.code is None
    assert caught.value.attempts == 4


async def test_proxy_html_502_is_an_engine_error_and_retried(
    client: OsviClient, mocked: aioresponses
) -> None:
    """An HTML 502 from a proxy is an EngineError with no code, and it is retried."""
    html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    mocked.post(INJECT_URL, status=502, body=html, content_type="text/html")
    mocked.post(INJECT_URL, payload=OK_BODY)
    result = await client.inject_context(SESSION_ID, "b")
    assert result.attempts == 2

    for _ in range(4):
        mocked.post(INJECT_URL, status=502, body=html, content_type="text/html")
    with pytest.raises(EngineError) as caught:
        await client.inject_context(SESSION_ID, "b")
    assert caught.value.code is None
    assert "502 Bad Gateway" in caught.value.body


async def test_retry_after_seconds_sets_the_wait(
    client: OsviClient, mocked: aioresponses, fake_sleep: FakeSleep
) -> None:
    """A 429 with Retry-After: 2 waits 2 s, not the jittered backoff."""
    mocked.post(INJECT_URL, status=429, body="", headers={"Retry-After": "2"})
    mocked.post(INJECT_URL, payload=OK_BODY)
    await client.inject_context(SESSION_ID, "b")
    assert fake_sleep.delays == [2.0]


async def test_retry_after_is_capped(
    mocked: aioresponses, fast_retry: RetryPolicy, fake_sleep: FakeSleep
) -> None:
    """A Retry-After longer than max_retry_after is cut to the cap."""
    import attrs

    policy = attrs.evolve(fast_retry, max_retry_after=5.0)
    mocked.post(INJECT_URL, status=503, body="", headers={"Retry-After": "3600"})
    mocked.post(INJECT_URL, payload=OK_BODY)
    async with OsviClient(TOKEN, base_url=BASE_URL, retry=policy) as osvi:
        await osvi.inject_context(SESSION_ID, "b")
    assert fake_sleep.delays == [5.0]


async def test_retry_after_ignored_when_not_respected(
    mocked: aioresponses, fast_retry: RetryPolicy, fake_sleep: FakeSleep
) -> None:
    """respect_retry_after=False keeps the jittered backoff."""
    import attrs

    policy = attrs.evolve(fast_retry, respect_retry_after=False)
    mocked.post(INJECT_URL, status=429, body="", headers={"Retry-After": "30"})
    mocked.post(INJECT_URL, payload=OK_BODY)
    async with OsviClient(TOKEN, base_url=BASE_URL, retry=policy) as osvi:
        await osvi.inject_context(SESSION_ID, "b")
    assert fake_sleep.delays == [0.25]


async def test_deadline_stops_retrying_before_it_would_be_passed(
    mocked: aioresponses, fake_sleep: FakeSleep
) -> None:
    """With a 1 s deadline and 2 s Retry-After waits, no retry starts: one attempt only."""
    policy = RetryPolicy(deadline=1.0, sleep=fake_sleep, random=lambda: 0.5)
    mocked.post(INJECT_URL, status=503, body="", headers={"Retry-After": "2"}, repeat=True)
    async with OsviClient(TOKEN, base_url=BASE_URL, retry=policy) as osvi:
        with pytest.raises(ServerError) as caught:
            await osvi.inject_context(SESSION_ID, "b")
    assert caught.value.attempts == 1
    assert fake_sleep.delays == []


async def test_connection_error_is_typed_and_retried(
    client: OsviClient, mocked: aioresponses
) -> None:
    """A dropped connection becomes APIConnectionError, retried by default."""
    import aiohttp

    mocked.post(INJECT_URL, exception=aiohttp.ServerDisconnectedError())
    mocked.post(INJECT_URL, payload=OK_BODY)
    assert (await client.inject_context(SESSION_ID, "b")).attempts == 2

    mocked.post(INJECT_URL, exception=aiohttp.ServerDisconnectedError(), repeat=True)
    with pytest.raises(APIConnectionError) as caught:
        await client.inject_context(SESSION_ID, "b")
    assert type(caught.value) is APIConnectionError
    assert caught.value.request_sent is True
    assert caught.value.attempts == 4


async def test_timeout_is_typed_and_not_retried_when_disabled(
    mocked: aioresponses, fast_retry: RetryPolicy
) -> None:
    """retry_timeouts=False gives at-most-once behaviour for timeouts: one attempt."""
    import attrs

    mocked.post(INJECT_URL, exception=TimeoutError(), repeat=True)
    policy = attrs.evolve(fast_retry, retry_timeouts=False)
    async with OsviClient(TOKEN, base_url=BASE_URL, retry=policy) as osvi:
        with pytest.raises(APITimeoutError) as caught:
            await osvi.inject_context(SESSION_ID, "b")
    assert caught.value.attempts == 1
    assert caught.value.request_sent is True
    assert len(sent_requests(mocked)) == 1


async def test_connection_errors_not_retried_when_disabled(
    mocked: aioresponses, fast_retry: RetryPolicy
) -> None:
    """retry_connection_errors=False makes one attempt on a dropped connection."""
    import aiohttp
    import attrs

    mocked.post(INJECT_URL, exception=aiohttp.ClientPayloadError("cut"), repeat=True)
    policy = attrs.evolve(fast_retry, retry_connection_errors=False)
    async with OsviClient(TOKEN, base_url=BASE_URL, retry=policy) as osvi:
        with pytest.raises(APIConnectionError):
            await osvi.inject_context(SESSION_ID, "b")
    assert len(sent_requests(mocked)) == 1


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object at $"),
        (b'{"success": false, "data": {"context": []}}', "$.success"),
        (b'{"success": true}', "missing required key $.data"),
        (b'{"success": true, "data": {"context": "a"}}', "$.data.context"),
        (b'{"success": true, "data": {"context": [1]}}', "$.data.context"),
        (b'{"success": true, "data": {"context": [], "session_id": 5}}', "$.data.session_id"),
    ],
)
async def test_undocumented_success_body_is_a_decode_error(
    client: OsviClient, mocked: aioresponses, body: bytes, problem: str
) -> None:
    """A 200 whose body is not the documented shape raises ResponseDecodeError, no retry."""
    mocked.post(INJECT_URL, body=body)
    with pytest.raises(ResponseDecodeError) as caught:
        await client.inject_context(SESSION_ID, "b")
    assert problem in str(caught.value)
    assert caught.value.status == 200
    assert caught.value.attempts == 1
    assert len(sent_requests(mocked)) == 1


async def test_declared_oversized_body_is_refused_unread(mocked: aioresponses) -> None:
    """A Content-Length above the cap is refused before reading (the streamed case is tested
    against a real server in the integration tests)."""
    mocked.post(INJECT_URL, body=b"{}", headers={"Content-Length": str(5 * 1024 * 1024)})
    async with OsviClient(TOKEN, base_url=BASE_URL) as osvi:
        with pytest.raises(ResponseDecodeError, match="larger than"):
            await osvi.inject_context(SESSION_ID, "b")


async def test_on_retry_callback_and_log(
    mocked: aioresponses, fake_sleep: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    """Each retry is reported to on_retry and logged on 'osvi_async', without the token."""
    events: list[RetryEvent] = []
    policy = RetryPolicy(sleep=fake_sleep, random=lambda: 0.0, on_retry=events.append)
    mocked.post(INJECT_URL, status=502, payload=ENGINE_DOWN)
    mocked.post(INJECT_URL, payload=OK_BODY)
    caplog.set_level(logging.DEBUG, logger="osvi_async")
    async with OsviClient(TOKEN, base_url=BASE_URL, retry=policy) as osvi:
        await osvi.inject_context(SESSION_ID, "b")
    assert [(event.attempt, event.delay) for event in events] == [(1, 0.0)]
    assert isinstance(events[0].error, EngineError)
    [record] = [r for r in caplog.records if r.name == "osvi_async"]
    # The API's free text is not an error code: it stays out of the log (docs/observability.md).
    assert "attempt 1 failed (HTTP 502); retrying" in record.getMessage()
    assert "Python engine unreachable" not in record.getMessage()
    assert SESSION_ID in record.getMessage()
    assert TOKEN not in caplog.text


async def test_per_call_retry_overrides_client_default(
    client: OsviClient, mocked: aioresponses
) -> None:
    """retry=RetryPolicy.none() on one call makes exactly one attempt."""
    mocked.post(INJECT_URL, status=502, payload=ENGINE_DOWN, repeat=True)
    with pytest.raises(EngineError) as caught:
        await client.inject_context(SESSION_ID, "b", retry=RetryPolicy.none())
    assert caught.value.attempts == 1
    assert len(sent_requests(mocked)) == 1


async def test_per_call_timeout_reaches_aiohttp(client: OsviClient, mocked: aioresponses) -> None:
    """timeout= on a call bounds that request's connect phase, which ends 5% before it."""
    mocked.post(INJECT_URL, payload=OK_BODY)
    await client.inject_context(SESSION_ID, "b", timeout=2.5)
    [request] = sent_requests(mocked)
    assert request.kwargs["timeout"].connect == pytest.approx(2.375)


async def test_with_options_shares_pool_and_changes_defaults(
    client: OsviClient, mocked: aioresponses
) -> None:
    """A with_options view uses its own defaults, shares the pool, and closes with its origin."""
    view = client.with_options(timeout=1.5, retry=RetryPolicy.none())
    assert (view.timeout, view.retry.max_retries) == (1.5, 0)
    assert (client.timeout, client.retry.max_retries) == (30.0, 3)
    mocked.post(INJECT_URL, status=502, payload=ENGINE_DOWN)
    with pytest.raises(EngineError):
        await view.inject_context(SESSION_ID, "b")
    [request] = sent_requests(mocked)
    assert request.kwargs["timeout"].connect == pytest.approx(1.425)
    await view.close()
    assert not client.closed
    await client.close()
    assert view.closed
    with pytest.raises(ClientClosedError):
        await view.inject_context(SESSION_ID, "b")


async def test_with_options_keeps_unset_values(client: OsviClient) -> None:
    """with_options() without arguments changes nothing."""
    view = client.with_options()
    assert (view.timeout, view.retry, view.base_url) == (
        client.timeout,
        client.retry,
        client.base_url,
    )


@pytest.mark.parametrize(
    ("session_id", "context"),
    [
        ("../../admin", "x"),
        (SESSION_ID + "/x", "x"),
        (SESSION_ID + "\r\nX-Evil: 1", "x"),
        ("\uff14718a326-417b-4dda-90d0-21fd65a11cb8", "x"),  # fullwidth 4
        (SESSION_ID, "   \n\t"),
        (SESSION_ID, ""),
        (SESSION_ID, 42),
        (SESSION_ID, "bad \ud800 surrogate"),
        (None, "x"),
    ],
)
async def test_bad_input_raises_before_sending(
    client: OsviClient, mocked: aioresponses, session_id: Any, context: Any
) -> None:
    """Invalid session ids and contexts raise ClientValidationError and send nothing."""
    with pytest.raises(ClientValidationError):
        await client.inject_context(session_id, context)
    assert mocked.requests == {}


async def test_bad_per_call_options_raise(client: OsviClient, mocked: aioresponses) -> None:
    """A bad per-call timeout or retry is a ClientValidationError; nothing is sent."""
    with pytest.raises(ClientValidationError, match="timeout"):
        await client.inject_context(SESSION_ID, "x", timeout=-1)
    with pytest.raises(ClientValidationError, match="RetryPolicy"):
        await client.inject_context(SESSION_ID, "x", retry=3)  # type: ignore[arg-type]
    with pytest.raises(ClientValidationError, match="timeout"):
        client.with_options(timeout=0)
    assert mocked.requests == {}


async def test_closed_client_raises_and_close_is_idempotent(mocked: aioresponses) -> None:
    """close() twice is fine; any use afterwards raises ClientClosedError (an OsviError)."""
    osvi = OsviClient(TOKEN, base_url=BASE_URL)
    mocked.post(INJECT_URL, payload=OK_BODY)
    await osvi.inject_context(SESSION_ID, "b")
    await osvi.close()
    await osvi.close()
    assert osvi.closed
    with pytest.raises(OsviError, match="closed"):
        await osvi.inject_context(SESSION_ID, "b")
    with pytest.raises(ClientClosedError):
        async with osvi:
            pass


async def test_unclosed_client_warns(mocked: aioresponses) -> None:
    """A client dropped with its pool open emits a ResourceWarning naming the fix."""
    mocked.post(INJECT_URL, payload=OK_BODY)
    osvi = OsviClient(TOKEN, base_url=BASE_URL)
    await osvi.inject_context(SESSION_ID, "b")
    transport = osvi._transport
    with pytest.warns(ResourceWarning, match="Unclosed <OsviClient"):  # noqa: PT031
        del osvi  # CPython finalises here; collect() covers other runtimes
        gc.collect()
    await transport.close()


async def test_never_used_client_needs_no_close() -> None:
    """A client that never sent a request holds no pool, so dropping it does not warn."""
    osvi = OsviClient(TOKEN, base_url=BASE_URL)
    assert osvi._transport.needs_closing is False
    del osvi
    gc.collect()


async def test_borrowed_session_is_used_and_never_closed(mocked: aioresponses) -> None:
    """A caller's ClientSession carries the requests and stays open after close()."""
    import aiohttp

    mocked.post(INJECT_URL, payload=OK_BODY)
    async with aiohttp.ClientSession() as own:
        osvi = OsviClient(TOKEN, base_url=BASE_URL, session=own)
        await osvi.inject_context(SESSION_ID, "b")
        await osvi.close()
        assert not own.closed
        assert len(sent_requests(mocked)) == 1


async def test_borrowed_session_closed_by_owner_is_typed(mocked: aioresponses) -> None:
    """If the caller closes their session, the next call raises ClientClosedError."""
    import aiohttp

    own = aiohttp.ClientSession()
    await own.close()
    osvi = OsviClient(TOKEN, base_url=BASE_URL, session=own)
    with pytest.raises(ClientClosedError, match="closed by its owner"):
        await osvi.inject_context(SESSION_ID, "b")


async def test_failed_call_remembers_an_earlier_maybe_applied_attempt(
    client: OsviClient, mocked: aioresponses
) -> None:
    """An engine 500 relayed as 502, then a 404: the error says the entry may be there."""
    engine_failed = {
        "success": False,
        "error": "Python engine returned 500 for POST /v1/chat/session/x/inject_context",
        "upstream_body": None,
    }
    mocked.post(INJECT_URL, status=502, payload=engine_failed)
    mocked.post(INJECT_URL, status=404, payload={"success": False, "error": "session_not_found"})
    with pytest.raises(NotFoundError) as caught:
        await client.inject_context(SESSION_ID, "b")
    assert caught.value.attempts == 2
    assert caught.value.may_have_been_applied is True


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, {"success": False, "error": "session_not_found"}, False),
        (400, {"success": False, "error": "context_required"}, False),
        (500, {"success": False, "error": "internal"}, True),
    ],
)
async def test_single_attempt_failure_classifies_itself(
    client: OsviClient,
    mocked: aioresponses,
    status: int,
    body: dict[str, Any],
    expected: bool,
) -> None:
    """A call that failed at once: may_have_been_applied follows that attempt alone."""
    mocked.post(INJECT_URL, status=status, payload=body)
    with pytest.raises(APIStatusError) as caught:
        await client.inject_context(SESSION_ID, "b")
    assert caught.value.may_have_been_applied is expected


async def test_unsent_retries_keep_may_have_been_applied_false(
    client: OsviClient, mocked: aioresponses
) -> None:
    """Four 'engine unreachable' 502s: the entry certainly was not applied."""
    for _ in range(4):
        mocked.post(INJECT_URL, status=502, payload=ENGINE_DOWN)
    with pytest.raises(EngineError) as caught:
        await client.inject_context(SESSION_ID, "b")
    assert caught.value.may_have_been_applied is False


async def test_413_is_request_too_large_and_never_retried(
    client: OsviClient, mocked: aioresponses, fake_sleep: FakeSleep
) -> None:
    """A 413 is RequestTooLargeError at once: one request, certainly not applied."""
    mocked.post(INJECT_URL, status=413, payload={"success": False, "error": "payload_too_large"})
    with pytest.raises(RequestTooLargeError) as caught:
        await client.inject_context(SESSION_ID, "x")
    assert (caught.value.status, caught.value.code) == (413, "payload_too_large")
    assert caught.value.may_have_been_applied is False
    assert len(sent_requests(mocked)) == 1
    assert fake_sleep.delays == []


async def test_success_for_another_session_is_refused_and_not_retried(
    client: OsviClient, mocked: aioresponses, fake_sleep: FakeSleep
) -> None:
    """A 200 naming another session is a ResponseDecodeError that may have been applied."""
    other = "0b5e3c1a-9f2d-4c7e-8a61-3d2f1e0c9b8a"
    mocked.post(
        INJECT_URL, payload={"success": True, "data": {"session_id": other, "context": ["x"]}}
    )
    with pytest.raises(ResponseDecodeError, match="not the session") as caught:
        await client.inject_context(SESSION_ID, "x")
    assert caught.value.may_have_been_applied is True
    assert caught.value.attempts == 1
    assert len(sent_requests(mocked)) == 1
    assert fake_sleep.delays == []


async def test_token_and_newlines_in_a_502_stay_out_of_errors_and_logs(
    client: OsviClient, mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    """A 502 echoing the token with a forged log line: redacted, escaped, in both places."""
    forged = f"engine down\nINFO osvi_async: all good API-Token: {TOKEN}"
    for _ in range(4):
        mocked.post(INJECT_URL, status=502, payload={"success": False, "error": forged})
    caplog.set_level(logging.INFO, logger="osvi_async")
    with pytest.raises(EngineError) as caught:
        await client.inject_context(SESSION_ID, "x")
    error = caught.value
    assert error.code == "engine down\nINFO osvi_async: all good API-Token: [REDACTED]"
    for text in (str(error), repr(error), error.body, caplog.text):
        assert TOKEN not in text
    assert "\n" not in str(error)
    messages = [r.getMessage() for r in caplog.records if r.name == "osvi_async"]
    assert len(messages) == 3
    # Not code-like, the forged text is left out of the log lines altogether.
    assert all("\n" not in message and "all good" not in message for message in messages)
