"""OpenTelemetry spans and metrics for every call, at no cost when OpenTelemetry is off.

A client resolves its `Telemetry` once, when it is built (`resolve`): None unless a tracer or
meter provider was passed, or an SDK was configured globally before the client was made. With
None, `_call.call` pays one `is None` check and nothing else; this module is never imported
unless the application imported OpenTelemetry first (configuring an SDK does).

With a `Telemetry`, `_call.call` hands the whole call to `Telemetry.call`, which runs the same
attempt loop inside a call span, through two thin wrappers made for that call:

- `_Attempts`, the transport seen by the loop: one CLIENT span per HTTP attempt (the HTTP
  client semantic conventions, `http.request.resend_count` on retries), current while it is
  sent, so that aiohttp's own instrumentation nests its span under it;
- the policy's `sleep`, wrapped: one INTERNAL span per backoff wait, with its delay.

Attributes are bounded and never carry the token, the context text or customer ids: the URL
template, not the URL's query (customer-addressed lookups carry the customer id there), and an
error code only when it looks like one (`_logging.api_code`). docs/observability.md has the tables.
"""

from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar
from urllib.parse import urlsplit

import attrs

from osvi_async._config import RetryPolicy
from osvi_async._logging import api_code
from osvi_async.errors import APIStatusError, ClientValidationError, OsviError

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
    from opentelemetry.trace import Span, Tracer

    from osvi_async._decode import Scrubber
    from osvi_async._endpoints import Endpoint
    from osvi_async._transport import RawResponse, Transport

T = TypeVar("T")

INSTRUMENTATION_NAME: Final = "osvi_async"
DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Seconds; the HTTP semantic conventions' advice for durations, plus retried calls' tail."""

ENDPOINT: Final = "osvi.endpoint"
OUTCOME: Final = "osvi.outcome"
CIRCUIT_STATE: Final = "osvi.circuit.state"
_CIRCUIT_STATES: Final = ("closed", "open", "half-open")


class BulkProbe(Protocol):
    """What the bulk gauges read from a live run, when a metrics reader collects."""

    @property
    def in_flight_count(self) -> int:
        """Items sent or being sent right now."""

    @property
    def breaker_state(self) -> str | None:
        """ "closed", "open" or "half-open"; None when the run has no circuit breaker."""


def resolve(
    base_url: str, tracer_provider: object | None, meter_provider: object | None
) -> Telemetry | None:
    """The client's telemetry, or None when there is nothing to record to.

    Providers passed in win; otherwise the global ones, if an SDK was set. A provider that is
    the API's no-op or still the global proxy (no SDK set) counts as none. Without either
    provider and with OpenTelemetry never imported, nothing is imported: no SDK can be set
    without importing it, so configure OpenTelemetry before building clients.
    """
    if tracer_provider is None and meter_provider is None and "opentelemetry" not in sys.modules:
        return None
    try:
        from opentelemetry import metrics, trace  # noqa: PLC0415 - optional, resolved once
    except ImportError:
        return None
    if tracer_provider is None:
        tracer_provider = trace.get_tracer_provider()
    if meter_provider is None:
        meter_provider = metrics.get_meter_provider()
    tracing = not isinstance(tracer_provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
    # The global meter proxy's class is private: told apart by name.
    measuring = not isinstance(meter_provider, metrics.NoOpMeterProvider) and not type(
        meter_provider
    ).__name__.startswith("_Proxy")
    if not tracing and not measuring:
        return None
    from opentelemetry.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.trace import TracerProvider  # noqa: PLC0415

    if not isinstance(tracer_provider, TracerProvider) or not isinstance(
        meter_provider, MeterProvider
    ):
        raise ClientValidationError(
            "tracer_provider and meter_provider must be OpenTelemetry providers, got "
            f"{type(tracer_provider).__name__} and {type(meter_provider).__name__}"
        )
    from osvi_async import __version__  # noqa: PLC0415 - the package imports this module's user

    tracer = tracer_provider.get_tracer(INSTRUMENTATION_NAME, __version__) if tracing else None
    instruments = _instruments(meter_provider, __version__) if measuring else None
    return Telemetry(base_url, tracer, instruments)


class Telemetry:
    """One client's tracer and instruments, and the server it talks to (for attributes)."""

    __slots__ = ("_instruments", "_server", "_tracer")

    def __init__(
        self, base_url: str, tracer: Tracer | None, instruments: _Instruments | None
    ) -> None:
        from opentelemetry.trace import NoOpTracer  # noqa: PLC0415

        self._tracer: Tracer = tracer or NoOpTracer()
        self._instruments = instruments
        parts = urlsplit(base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self._server: dict[str, str | int] = {
            "server.address": parts.hostname or "",
            "server.port": port,
        }

    def watch_run(self, probe: BulkProbe) -> None:
        """Let the bulk gauges read `probe` while it lives (kept weakly)."""
        if self._instruments is not None:
            self._instruments.runs.add(probe)

    def unwatch_run(self, probe: BulkProbe) -> None:
        """The run ended: stop reading it."""
        if self._instruments is not None:
            self._instruments.runs.discard(probe)

    async def call(
        self,
        run: Callable[..., Awaitable[T]],
        transport: Transport,
        endpoint: Endpoint[T],
        url: str,
        body: bytes | None,
        *,
        policy: RetryPolicy,
        session_id: str,
        **options: Any,
    ) -> T:
        """`run` (the attempt loop) inside a call span, its attempts and waits traced."""
        from opentelemetry.trace import SpanKind, StatusCode  # noqa: PLC0415

        name = endpoint.name
        attributes: dict[str, str | int | bool] = {ENDPOINT: name, **self._server}
        if session_id:
            attributes["osvi.session_id"] = session_id  # an id the API made; not personal
        attempts = _Attempts(self, transport, *_url_attributes(url, session_id))
        traced_policy = attrs.evolve(policy, sleep=attempts.wait_span(policy.sleep))
        started = time.monotonic()
        outcome = "ok"
        with self._tracer.start_as_current_span(
            f"osvi {name}",
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await run(
                    attempts, endpoint, url, body, policy=traced_policy, session_id=session_id,
                    telemetry=None, **options,
                )  # fmt: skip
            except OsviError as error:
                outcome = type(error).__name__
                span.set_attributes(_error_attributes(error))
                span.set_status(StatusCode.ERROR, outcome)
                raise
            except BaseException as error:  # cancelled, or a bug: still one call
                outcome = type(error).__name__
                span.set_attribute("error.type", outcome)
                raise
            finally:
                span.set_attribute("osvi.attempts", attempts.count)
                if attempts.status is not None:
                    span.set_attribute("http.response.status_code", attempts.status)
                if self._instruments is not None:
                    self._instruments.record_call(
                        name, outcome, attempts.count, time.monotonic() - started
                    )
            duplicate = bool(getattr(result, "possible_duplicate", False))
            span.set_attribute("osvi.possible_duplicate", duplicate)
            if duplicate and self._instruments is not None:
                self._instruments.possible_duplicates.add(1, {ENDPOINT: name})
            return result

    async def operation(self, name: str, run: Awaitable[T]) -> T:
        """`run` (an SDK method made of several calls, as `inject_context_for_customer`'s
        lookup and inject) inside one INTERNAL span, so that its calls share one trace.
        Failures say their class only: an exception's text may name the customer."""
        from opentelemetry.trace import SpanKind, StatusCode  # noqa: PLC0415

        with self._tracer.start_as_current_span(
            f"osvi {name}",
            kind=SpanKind.INTERNAL,
            attributes={ENDPOINT: name, **self._server},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await run
            except BaseException as error:
                span.set_attribute("error.type", type(error).__name__)
                if isinstance(error, OsviError):
                    span.set_status(StatusCode.ERROR, type(error).__name__)
                raise

    def attempt_span(
        self, method: str, template: str, full: str, resend: int
    ) -> AbstractContextManager[Span]:
        """A CLIENT span for one HTTP attempt, current while it runs."""
        from opentelemetry.trace import SpanKind  # noqa: PLC0415

        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.template": template,
            "url.full": full,
            **self._server,
        }
        if resend:
            attributes["http.request.resend_count"] = resend
        return self._tracer.start_as_current_span(
            f"{method} {template}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )

    def wait_span(
        self, delay: float, after_attempt: int, error_type: str
    ) -> AbstractContextManager[Span]:
        """An INTERNAL span for one backoff wait."""
        if self._instruments is not None:
            self._instruments.retries.add(1, {"error.type": error_type})
        return self._tracer.start_as_current_span(
            "osvi retry wait",
            attributes={
                "osvi.retry.delay": delay,
                "osvi.retry.after_attempt": after_attempt,
                "error.type": error_type,
            },
        )


class _Attempts:
    """The transport as one traced call sees it: each send in its own CLIENT span."""

    __slots__ = ("_full", "_telemetry", "_template", "_transport", "count", "error", "status")

    def __init__(
        self, telemetry: Telemetry, transport: Transport, template: str, full: str
    ) -> None:
        self._telemetry = telemetry
        self._transport = transport
        self._template = template
        self._full = full
        self.count = 0
        self.status: int | None = None
        self.error = ""

    @property
    def scrubber(self) -> Scrubber:
        """The transport's own."""
        return self._transport.scrubber

    async def send(
        self, method: str, url: str, body: bytes | None, *, timeout: float
    ) -> RawResponse:
        from opentelemetry.trace import StatusCode  # noqa: PLC0415

        self.count += 1
        resend = self.count - 1
        with self._telemetry.attempt_span(method, self._template, self._full, resend) as span:
            try:
                response = await self._transport.send(method, url, body, timeout=timeout)
            except BaseException as error:
                self.status = None
                self.error = type(error).__name__
                span.set_attribute("error.type", self.error)
                span.set_status(StatusCode.ERROR, self.error)
                raise
            self.status = status = response.status
            span.set_attribute("http.response.status_code", status)
            if status >= 400:
                self.error = str(status)
                span.set_attribute("error.type", self.error)
                span.set_status(StatusCode.ERROR)
            return response

    def wait_span(self, sleep: Callable[[float], Awaitable[None]]) -> Callable[[float], Any]:
        """`sleep`, each wait in its own span naming the delay and what failed."""

        async def traced_sleep(delay: float) -> None:
            with self._telemetry.wait_span(delay, self.count, self.error or "unknown"):
                await sleep(delay)

        return traced_sleep


def _url_attributes(url: str, session_id: str) -> tuple[str, str]:
    """`url.template` (the path, the session id as `{session_id}`) and `url.full` (the URL,
    its query values REDACTED as the conventions advise: lookups carry customer ids there)."""
    parts = urlsplit(url)
    template = parts.path.replace(session_id, "{session_id}") if session_id else parts.path
    full = url
    if parts.query:
        names = (pair.partition("=")[0] for pair in parts.query.split("&"))
        full = url.partition("?")[0] + "?" + "&".join(f"{name}=REDACTED" for name in names)
    return template, full


def _error_attributes(error: OsviError) -> dict[str, str | int | bool]:
    """What a failed call's span says about the failure: bounded, no server text."""
    attributes: dict[str, str | int | bool] = {
        "error.type": type(error).__name__,
        "osvi.may_have_been_applied": bool(error.may_have_been_applied),
    }
    if isinstance(error, APIStatusError):
        attributes["http.response.status_code"] = error.status
        code = api_code(error.code)  # never free text: it may quote the context, or an id
        if code is not None:
            attributes["osvi.error.code"] = code
    return attributes


class _Instruments:
    """The instruments of one meter provider, shared by every client that records to it (an
    SDK keeps the first of two same-named instruments, and the callbacks of the first)."""

    def __init__(self, meter: Meter) -> None:
        self.calls = meter.create_counter(
            "osvi.client.calls", "{call}", "SDK calls, by endpoint and outcome"
        )
        self.attempts = meter.create_counter(
            "osvi.client.attempts", "{attempt}", "HTTP attempts sent, by endpoint"
        )
        self.retries = meter.create_counter(
            "osvi.client.retries", "{retry}", "Backoff waits before another attempt"
        )
        self.possible_duplicates = meter.create_counter(
            "osvi.client.possible_duplicates", "{call}", "Results flagged possible_duplicate"
        )
        self.duration = meter.create_histogram(
            "osvi.client.call.duration",
            "s",
            "Whole calls, first attempt to final answer, waits included",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.runs: weakref.WeakSet[BulkProbe] = weakref.WeakSet()
        meter.create_observable_up_down_counter(
            "osvi.bulk.in_flight",
            [self._observe_in_flight],
            "{request}",
            "Bulk items being sent right now, over every live run",
        )
        meter.create_observable_up_down_counter(
            "osvi.bulk.circuit.state",
            [self._observe_circuits],
            "{run}",
            "Live bulk runs with a circuit breaker, by breaker state",
        )

    def record_call(self, endpoint: str, outcome: str, attempts: int, seconds: float) -> None:
        labels = {ENDPOINT: endpoint, OUTCOME: outcome}
        self.calls.add(1, labels)
        self.duration.record(seconds, labels)
        if attempts:
            self.attempts.add(attempts, {ENDPOINT: endpoint})

    def _observe_in_flight(self, _options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation  # noqa: PLC0415

        return [Observation(sum(run.in_flight_count for run in list(self.runs)))]

    def _observe_circuits(self, _options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation  # noqa: PLC0415

        counts = dict.fromkeys(_CIRCUIT_STATES, 0)
        for run in list(self.runs):
            state = run.breaker_state
            if state is not None:
                counts[state] += 1
        return [Observation(count, {CIRCUIT_STATE: state}) for state, count in counts.items()]


_SHARED: Final[weakref.WeakKeyDictionary[Any, _Instruments]] = weakref.WeakKeyDictionary()


def _instruments(provider: MeterProvider, version: str) -> _Instruments:
    instruments = _SHARED.get(provider)
    if instruments is None:
        instruments = _SHARED[provider] = _Instruments(
            provider.get_meter(INSTRUMENTATION_NAME, version)
        )
    return instruments
