"""When telemetry is on or off, and the structured fields of the SDK's log records."""

from __future__ import annotations

import hashlib
import json
import logging
import sys

import aiohttp
import pytest
from aioresponses import aioresponses
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider

from osvi_async import CircuitBreaker, ClientValidationError, OsviClient, RetryPolicy
from osvi_async._flow import FlowControl
from osvi_async._logging import LineHandler, api_code
from osvi_async._telemetry import resolve
from osvi_async.errors import BadRequestError, EngineRejectedError, NotFoundError, ServerError
from tests.support import BASE_URL, INJECT_URL, SESSION_ID, TOKEN, FakeSleep

OK = {"success": True, "data": {"session_id": SESSION_ID, "context": ["x"]}}


def test_nothing_configured_resolves_to_none() -> None:
    """No providers passed and no SDK set globally: no telemetry (one `is None` per call)."""
    assert resolve(BASE_URL, None, None) is None


def test_no_op_providers_resolve_to_none() -> None:
    """The API's no-op providers count as none."""
    assert resolve(BASE_URL, NoOpTracerProvider(), NoOpMeterProvider()) is None


def test_opentelemetry_missing_resolves_to_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """With OpenTelemetry not importable (as when not installed), a client still builds."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    assert resolve(BASE_URL, None, None) is None


async def test_a_provider_that_is_not_one_is_refused() -> None:
    """Anything but an OpenTelemetry provider is a ClientValidationError, like any option."""
    with pytest.raises(ClientValidationError, match="OpenTelemetry providers"):
        OsviClient(TOKEN, base_url=BASE_URL, tracer_provider="jaeger")  # type: ignore[arg-type]


async def test_a_view_traces_like_its_client(mocked: aioresponses) -> None:
    """A `with_options` view records to the providers of the client it was made from."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    mocked.post(INJECT_URL, payload=OK)
    async with OsviClient(TOKEN, base_url=BASE_URL, tracer_provider=provider) as client:
        await client.with_options(timeout=2.0).inject_context(SESSION_ID, "x")
    names = [span.name for span in spans.get_finished_spans()]
    assert names == ["POST /v1/chat/session/{session_id}/inject_context", "osvi inject_context"]


async def test_retry_and_give_up_records_carry_structured_fields(
    mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    """A 503 then an engine refusal: a `retry` record and a `give_up` record, each with
    event, endpoint, attempt, status (and delay for the retry) in `extra`."""
    mocked.post(INJECT_URL, status=503, payload={"success": False, "error": "busy"})
    mocked.post(INJECT_URL, status=422, payload={"success": False, "error": "engine_rejected"})
    caplog.set_level(logging.DEBUG, logger="osvi_async")
    policy = RetryPolicy(sleep=FakeSleep(), random=lambda: 0.5)
    async with OsviClient(TOKEN, base_url=BASE_URL, retry=policy) as client:
        with pytest.raises(BadRequestError) as caught:
            await client.inject_context(SESSION_ID, "x")
    records = [r for r in caplog.records if getattr(r, "event", None)]
    retry, give_up = records
    assert (retry.event, retry.endpoint, retry.attempt, retry.status) == (  # type: ignore[attr-defined]
        "retry", "inject_context", 1, 503,
    )  # fmt: skip
    assert retry.delay == pytest.approx(0.25)  # type: ignore[attr-defined]
    assert retry.code == "busy"  # type: ignore[attr-defined]
    assert retry.error_type == ServerError.__name__  # type: ignore[attr-defined]
    assert give_up.levelno == logging.DEBUG
    assert (give_up.event, give_up.attempt, give_up.status) == ("give_up", 2, 422)  # type: ignore[attr-defined]
    assert give_up.error_type == type(caught.value).__name__  # type: ignore[attr-defined]
    assert give_up.may_have_been_applied is False  # type: ignore[attr-defined]
    assert not hasattr(give_up, "delay")


def test_circuit_records_say_event_and_cooldown(caplog: pytest.LogCaptureFixture) -> None:
    """Opening the circuit logs `circuit_open` with the failures and the cooldown."""
    caplog.set_level(logging.INFO, logger="osvi_async")
    flow = FlowControl(
        concurrency=1,
        budget=None,
        breaker=CircuitBreaker(failure_threshold=2, cooldown=1.5),
        rate_limit=None,
    )
    error = EngineRejectedError("x", status=422, code=None, body="")
    flow.after_attempt(error, outage=True)
    flow.after_attempt(error, outage=True)
    flow.after_attempt(None, outage=False)
    events = [(r.event, r.__dict__.get("delay")) for r in caplog.records]  # type: ignore[attr-defined]
    assert events == [("circuit_open", 1.5), ("circuit_closed", None)]
    assert caplog.records[0].failures == 2  # type: ignore[attr-defined]


def _record(message: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("osvi_async", logging.WARNING, __file__, 1, message, (), None)
    record.__dict__.update(fields)
    return record


def test_json_line_carries_the_fields_and_redacts_secrets() -> None:
    """A JSON line holds level, logger, message and the structured fields; secrets are
    replaced by [REDACTED] wherever they appear."""
    handler = LineHandler(json_lines=True, secrets=[TOKEN])
    line = handler.line(
        _record(f"attempt failed\n(token {TOKEN})", event="retry", endpoint="inject_context",
                attempt=2, delay=0.5, status=503, code=f"echo {TOKEN}")
    )  # fmt: skip
    fields = json.loads(line)
    assert TOKEN not in line
    assert fields["message"] == "attempt failed (token [REDACTED])"
    assert fields["code"] == "echo [REDACTED]"
    assert (fields["level"], fields["logger"], fields["event"]) == (
        "warning", "osvi_async", "retry",
    )  # fmt: skip
    assert (fields["attempt"], fields["delay"], fields["status"]) == (2, 0.5, 503)
    assert "\n" not in line


def test_text_line_is_level_and_message_with_the_exception_on_one_line() -> None:
    """Text lines read `level: message`, an exception joined on the same line."""
    try:
        raise ValueError(f"bad {TOKEN}")
    except ValueError:
        record = _record("bulk run: worker failed", event="bulk_task_failed")
        record.exc_info = sys.exc_info()
    line = LineHandler(secrets=[TOKEN]).line(record)
    assert line.startswith("warning: bulk run: worker failed | Traceback")
    assert "ValueError: bad [REDACTED]" in line
    assert "\n" not in line


PII_CUSTOMER = "cust-PII-7f3a9"
PII_AGENT = "agent_emulator"
PII_ACTIVE_URL = (
    f"{BASE_URL}/v1/chat/session/active?customer_id={PII_CUSTOMER}&agent_uuid={PII_AGENT}"
)


def _record_text(record: logging.LogRecord) -> str:
    """Everything a handler could print of a record: its message and every field."""
    return " ".join([record.getMessage(), *(str(value) for value in record.__dict__.values())])


async def test_customer_lookup_logs_a_pseudonym_never_the_customer_id(
    mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    """A lookup by customer retried (a 503, a connection error quoting the URL) then refused
    (a 404 echoing the id): no record, message or field, holds the customer id; they name
    `customer #<8 hex of its sha256>`; the raised error still names the customer."""
    pseudonym = "customer #" + hashlib.sha256(PII_CUSTOMER.encode()).hexdigest()[:8]
    mocked.get(PII_ACTIVE_URL, status=503, payload={"success": False, "error": "busy"})
    mocked.get(PII_ACTIVE_URL, exception=aiohttp.ServerDisconnectedError(PII_ACTIVE_URL))
    mocked.get(
        PII_ACTIVE_URL,
        status=404,
        payload={"success": False, "error": f"no active session for {PII_CUSTOMER}"},
    )
    caplog.set_level(logging.DEBUG, logger="osvi_async")
    policy = RetryPolicy(sleep=FakeSleep(), random=lambda: 0.5)
    async with OsviClient(TOKEN, base_url=BASE_URL, retry=policy) as client:
        with pytest.raises(NotFoundError) as caught:
            await client.get_active_session(PII_CUSTOMER, PII_AGENT)
    assert PII_CUSTOMER in str(caught.value)  # the caller's own data, in the caller's error
    records = [r for r in caplog.records if getattr(r, "event", None)]
    assert [r.event for r in records] == ["retry", "retry", "give_up"]  # type: ignore[attr-defined]
    handler = LineHandler(json_lines=True)
    for record in records:
        assert PII_CUSTOMER not in _record_text(record)
        assert PII_CUSTOMER not in handler.line(record)
        assert f"get_active_session for {pseudonym} with agent 'agent_emulator'" in (
            record.getMessage()
        )
    assert records[0].code == "busy"  # type: ignore[attr-defined]
    assert not hasattr(records[2], "code")  # free text is not a code


async def test_free_text_error_codes_stay_out_of_logs_and_attributes(
    mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    """A server's free-text `error` (an upstream sentence echoing the context) goes into no
    log field, log message or span attribute; a code-like word does."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    echo = f"Python engine returned 500 for POST /v1/chat/session/{SESSION_ID}/inject_context"
    mocked.post(INJECT_URL, status=400, payload={"success": False, "error": echo})
    mocked.post(INJECT_URL, status=400, payload={"success": False, "error": "context_too_long"})
    caplog.set_level(logging.DEBUG, logger="osvi_async")
    async with OsviClient(TOKEN, base_url=BASE_URL, tracer_provider=provider) as client:
        for _ in range(2):
            with pytest.raises(BadRequestError):
                await client.inject_context(SESSION_ID, "x")
    free, word = [r for r in caplog.records if getattr(r, "event", None) == "give_up"]
    assert not hasattr(free, "code")
    assert "Python engine" not in free.getMessage()
    assert word.code == "context_too_long"  # type: ignore[attr-defined]
    calls = [span for span in spans.get_finished_spans() if span.name == "osvi inject_context"]
    assert [(span.attributes or {}).get("osvi.error.code") for span in calls] == [
        None,
        "context_too_long",
    ]


@pytest.mark.parametrize(
    ("code", "kept"),
    [
        ("session_not_found", True),
        ("busy", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("cust-PII-7f3a9", False),
        ("Session_Not_Found", False),
        ("no such session", False),
        ("9lives", False),
        ("", False),
        (None, False),
    ],
)
def test_api_code_keeps_only_code_like_words(code: str | None, kept: bool) -> None:
    """Only `^[a-z][a-z0-9_]{0,63}$` counts as an API error code in logs and attributes."""
    assert api_code(code) == (code if kept else None)
