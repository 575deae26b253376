"""OpenTelemetry against the emulator: what a trace and the metrics say about real calls.

Each test builds its own SDK providers with in-memory exporters and passes them to the
client (`tracer_provider=`, `meter_provider=`): the SDK's global provider can be set only
once per process, and nothing here touches it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from osvi_async import CircuitBreaker, InjectRequest, OsviClient, RetryPolicy
from osvi_async.errors import APIStatusError, EngineRejectedError
from osvi_async.testing import FaultPlan, OsviEmulator

pytestmark = pytest.mark.integration

CONTEXT = "Voice call: wants a refund for order 1234."
CUSTOMER = "+15550001111"
AGENT = "agent_0123456789"
FAST = RetryPolicy(initial_delay=0.001, max_delay=0.01)


class Recorder:
    """A tracer and a meter provider of the SDK, read back from memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def client(self, emulator: OsviEmulator, **options: object) -> OsviClient:
        """A client on `emulator` recording here."""
        return OsviClient(
            emulator.api_token,
            base_url=emulator.base_url,
            retry=FAST,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            **options,  # type: ignore[arg-type]
        )

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.spans.get_finished_spans()

    def points(self) -> dict[str, list[tuple[dict[str, object], float]]]:
        """Every metric point collected now: name -> [(attributes, value)]."""
        data = self.reader.get_metrics_data()
        found: dict[str, list[tuple[dict[str, object], float]]] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = point.count  # type: ignore[union-attr]
                        found.setdefault(metric.name, []).append(
                            (dict(point.attributes or {}), value)
                        )
        return found

    def all_attribute_values(self) -> Iterator[str]:
        """Every attribute value of every span, span event and metric point, as text."""
        for span in self.finished():
            yield span.name
            yield from (str(value) for value in (span.attributes or {}).values())
            for event in span.events:
                yield from (str(value) for value in (event.attributes or {}).values())
        for points in self.points().values():
            for attributes, _ in points:
                yield from (str(value) for value in attributes.values())


@pytest.fixture
def recorder() -> Recorder:
    """Fresh in-memory providers for one test."""
    return Recorder()


def by_name(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return sorted((span for span in spans if span.name.startswith(prefix)), key=_start)


def _start(span: ReadableSpan) -> int:
    return span.start_time or 0


async def test_retried_call_shows_each_attempt_and_wait(recorder: Recorder) -> None:
    """A call retried twice is one call span holding three attempt spans and two waits."""
    plan = FaultPlan()
    async with OsviEmulator(fault_plan=plan) as emulator:
        session_id = emulator.create_session()
        plan.script(session_id, ["unavailable", "gateway_timeout"])
        async with recorder.client(emulator) as client:
            result = await client.inject_context(session_id, CONTEXT)
        assert emulator.applied(session_id) == (CONTEXT,)
    spans = recorder.finished()
    (call_span,) = by_name(spans, "osvi inject_context")
    attempts = by_name(spans, "POST ")
    waits = by_name(spans, "osvi retry wait")
    assert result.attempts == 3
    assert call_span.kind is SpanKind.INTERNAL
    assert call_span.attributes is not None
    assert call_span.attributes["osvi.endpoint"] == "inject_context"
    assert call_span.attributes["osvi.attempts"] == 3
    assert call_span.attributes["http.response.status_code"] == 200
    assert call_span.attributes["osvi.possible_duplicate"] is True  # the 504 may have applied
    assert call_span.attributes["osvi.session_id"] == session_id
    assert [span.attributes["http.response.status_code"] for span in attempts] == [503, 504, 200]  # type: ignore[index]
    assert [span.attributes.get("http.request.resend_count") for span in attempts] == [None, 1, 2]  # type: ignore[union-attr]
    assert [span.attributes.get("error.type") for span in attempts] == ["503", "504", None]  # type: ignore[union-attr]
    for span in attempts:
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == call_span.context.span_id
        assert span.attributes is not None
        assert span.attributes["url.template"] == "/v1/chat/session/{session_id}/inject_context"
        assert span.attributes["http.request.method"] == "POST"
        assert span.attributes["server.address"] == "127.0.0.1"
    assert [span.attributes["osvi.retry.after_attempt"] for span in waits] == [1, 2]  # type: ignore[index]
    assert [span.attributes["error.type"] for span in waits] == ["503", "504"]  # type: ignore[index]
    assert all(0 <= span.attributes["osvi.retry.delay"] <= 0.01 for span in waits)  # type: ignore[index, operator]
    # In time order: attempt, wait, attempt, wait, attempt.
    timeline = sorted([*attempts, *waits], key=_start)
    assert [span.name.split()[0] for span in timeline] == ["POST", "osvi", "POST", "osvi", "POST"]
    points = recorder.points()
    assert points["osvi.client.calls"] == [
        ({"osvi.endpoint": "inject_context", "osvi.outcome": "ok"}, 1)
    ]
    assert points["osvi.client.attempts"] == [({"osvi.endpoint": "inject_context"}, 3)]
    assert sorted(points["osvi.client.retries"], key=str) == [
        ({"error.type": "503"}, 1),
        ({"error.type": "504"}, 1),
    ]
    assert points["osvi.client.possible_duplicates"] == [({"osvi.endpoint": "inject_context"}, 1)]
    assert points["osvi.client.call.duration"] == [
        ({"osvi.endpoint": "inject_context", "osvi.outcome": "ok"}, 1)
    ]


async def test_failed_call_says_what_failed_and_whether_it_applied(recorder: Recorder) -> None:
    """A call given up on carries its error type, code, status and may_have_been_applied."""
    plan = FaultPlan()
    async with OsviEmulator(fault_plan=plan) as emulator:
        session_id = emulator.create_session()
        plan.script(session_id, ["engine_rejected"])
        async with recorder.client(emulator) as client:
            with pytest.raises(EngineRejectedError) as caught:
                await client.inject_context(session_id, CONTEXT)
        assert emulator.applied(session_id) == ()
    (call_span,) = by_name(recorder.finished(), "osvi inject_context")
    attributes = call_span.attributes
    assert attributes is not None
    assert call_span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "EngineRejectedError"
    assert attributes["osvi.may_have_been_applied"] is False
    assert attributes["osvi.attempts"] == 1
    assert attributes["http.response.status_code"] == caught.value.status
    if caught.value.code is not None and " " not in caught.value.code:
        assert attributes["osvi.error.code"] == caught.value.code
    else:
        assert "osvi.error.code" not in attributes  # free text never becomes an attribute
    assert recorder.points()["osvi.client.calls"] == [
        ({"osvi.endpoint": "inject_context", "osvi.outcome": "EngineRejectedError"}, 1)
    ]


async def test_no_token_context_or_customer_id_in_any_attribute(recorder: Recorder) -> None:
    """Calls by customer, retried and failed, leave no token, context or customer id in
    any span name, attribute, event or metric point."""
    plan = FaultPlan(all_endpoints=True)
    async with OsviEmulator(fault_plan=plan) as emulator:
        plan.script_endpoint("active_session", ["unavailable"])
        plan.script_endpoint("create_session", ["unavailable"])
        async with recorder.client(emulator) as client:
            session = await client.create_session(AGENT, CUSTOMER, context=[CONTEXT])
            await client.inject_context_for_customer(CUSTOMER, AGENT, CONTEXT)
            await client.get_active_session(CUSTOMER, AGENT)
            await client.get_active_sessions(CUSTOMER)
            with pytest.raises(APIStatusError):
                await client.get_active_session(CUSTOMER + "9", AGENT)
            await client.support(session.id, "whisper", message=CONTEXT)
            token = emulator.api_token
    values = list(recorder.all_attribute_values())
    assert len(recorder.finished()) >= 12
    for value in values:
        assert token not in value
        assert CONTEXT not in value
        assert CUSTOMER.lstrip("+") not in value
    lookups = [
        span
        for span in recorder.finished()
        if (span.attributes or {}).get("url.template") == "/v1/chat/session/active"
    ]
    assert lookups
    assert all(
        "customer_id=REDACTED" in str((span.attributes or {})["url.full"]) for span in lookups
    )


async def test_bulk_run_traces_each_item_and_meters_the_run(recorder: Recorder) -> None:
    """inject_many makes one call span per item under the caller's span, and its metrics
    count every call; the in-flight and circuit gauges read the live run."""
    tracer = recorder.tracer_provider.get_tracer("test")
    async with OsviEmulator() as emulator:
        sessions = [emulator.create_session() for _ in range(4)]
        async with recorder.client(emulator) as client:
            with tracer.start_as_current_span("job") as job:
                run = client.inject_many(
                    [InjectRequest(s, f"entry {i}") for i, s in enumerate(sessions * 3)],
                    concurrency=4,
                    circuit_breaker=CircuitBreaker(),
                )
                async with run:
                    during = None
                    async for outcome in run:
                        assert outcome.ok
                        if during is None:
                            during = recorder.points()
        assert all(len(emulator.applied(s)) == 3 for s in sessions)
    calls = by_name(recorder.finished(), "osvi inject_context")
    assert len(calls) == 12
    assert all(span.parent is not None for span in calls)
    assert {span.parent.span_id for span in calls} == {job.get_span_context().span_id}  # type: ignore[union-attr]
    assert during is not None
    assert during["osvi.bulk.circuit.state"] == [
        ({"osvi.circuit.state": "closed"}, 1),
        ({"osvi.circuit.state": "open"}, 0),
        ({"osvi.circuit.state": "half-open"}, 0),
    ]
    assert 0 <= during["osvi.bulk.in_flight"][0][1] <= 4
    after = recorder.points()
    assert after["osvi.client.calls"] == [
        ({"osvi.endpoint": "inject_context", "osvi.outcome": "ok"}, 12)
    ]
    assert after["osvi.bulk.in_flight"] == [({}, 0)]
    assert all(count == 0 for _, count in after["osvi.bulk.circuit.state"])


async def test_breaker_state_gauge_counts_an_open_circuit(recorder: Recorder) -> None:
    """While an outage holds a run's circuit open, the circuit gauge says "open"."""
    plan = FaultPlan()
    async with OsviEmulator(fault_plan=plan) as emulator:
        sessions = [emulator.create_session() for _ in range(3)]
        for session_id in sessions:
            plan.script(session_id, ["unavailable"] * 20)
        async with recorder.client(emulator) as client:
            run = client.inject_many(
                [InjectRequest(s, CONTEXT) for s in sessions],
                concurrency=3,
                retry=RetryPolicy(max_retries=20, initial_delay=0.001, max_delay=0.002),
                circuit_breaker=CircuitBreaker(
                    failure_threshold=3, cooldown=30.0, give_up_after=0.3
                ),
            )
            seen: list[dict[str, float]] = []
            async with run:
                async for outcome in run:
                    assert not outcome.ok
                    seen.append(
                        {
                            str(attrs["osvi.circuit.state"]): value
                            for attrs, value in recorder.points()["osvi.bulk.circuit.state"]
                        }
                    )
    assert seen[0] == {"closed": 0, "open": 1, "half-open": 0}


async def test_aiohttp_instrumentation_nests_under_each_attempt(recorder: Recorder) -> None:
    """With opentelemetry-instrumentation-aiohttp-client on, aiohttp's CLIENT span of each
    request is a child of the SDK's attempt span."""
    from opentelemetry.instrumentation.aiohttp_client import (
        AioHttpClientInstrumentor,
    )

    instrumentor = AioHttpClientInstrumentor()
    instrumentor.instrument(tracer_provider=recorder.tracer_provider)
    try:
        plan = FaultPlan()
        async with OsviEmulator(fault_plan=plan) as emulator:
            session_id = emulator.create_session()
            plan.script(session_id, ["unavailable"])
            async with recorder.client(emulator, http_backend="aiohttp") as client:
                await client.inject_context(session_id, CONTEXT)
    finally:
        instrumentor.uninstrument()
    spans = recorder.finished()
    attempts = by_name(spans, "POST /v1/chat/session/{session_id}")
    outer = {span.context.span_id for span in attempts}
    inner = [span for span in spans if span.instrumentation_scope.name != "osvi_async"]  # type: ignore[union-attr]
    assert len(attempts) == 2
    assert len(inner) == 2
    assert all(span.kind is SpanKind.CLIENT for span in inner)
    assert {span.parent.span_id for span in inner if span.parent is not None} == outer


async def test_inject_by_customer_is_one_trace(recorder: Recorder) -> None:
    """Without a span of the caller's, `inject_context_for_customer`'s lookup and inject are
    children of one `osvi inject_context_for_customer` root span, in one trace."""
    async with OsviEmulator() as emulator:
        session_id = emulator.create_session(agent_uuid=AGENT, customer_id=CUSTOMER)
        async with recorder.client(emulator) as client:
            await client.inject_context_for_customer(CUSTOMER, AGENT, CONTEXT)
        assert emulator.applied(session_id) == (CONTEXT,)
    spans = recorder.finished()
    (root,) = by_name(spans, "osvi inject_context_for_customer")
    assert root.parent is None
    assert root.context is not None
    assert {span.context.trace_id for span in spans if span.context} == {root.context.trace_id}
    children = [span.name for span in by_name(spans, "osvi ") if span.parent is not None]
    assert children == ["osvi get_active_session", "osvi inject_context"]
    assert all(span.parent.span_id == root.context.span_id  # type: ignore[union-attr]
               for span in by_name(spans, "osvi ") if span is not root)  # fmt: skip
