"""`OsviClient`: the lifecycle of a connection pool and one coroutine per API endpoint."""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self, TypeVar
from urllib.parse import quote

import attrs

from osvi_async._adaptive import DEFAULT_MAX_CONCURRENCY
from osvi_async._bulk import BulkRun, InjectItem, _Engine
from osvi_async._call import AttemptGate, call
from osvi_async._config import (
    DEFAULT_CIRCUIT_BREAKER,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONTEXT_BYTES,
    DEFAULT_RETRY_BUDGET,
    DEFAULT_TIMEOUT,
    CircuitBreaker,
    ClientConfig,
    RetryBudget,
    RetryPolicy,
)
from osvi_async._endpoints import (
    CREATE_SESSION,
    GET_ACTIVE_SESSION,
    GET_ACTIVE_SESSIONS,
    INJECT_CONTEXT,
    SEND_MESSAGE,
    SUPPORT,
    SUPPORT_WITH_MESSAGE,
    Endpoint,
)
from osvi_async._flow import FlowControl
from osvi_async._logging import customer_pseudonym
from osvi_async._sessions import SessionCache, inject_for_customer
from osvi_async._telemetry import resolve as resolve_telemetry
from osvi_async._transport import HttpBackend, closed_client_error, open_transport
from osvi_async._validation import (
    check_bool,
    check_callable,
    check_context,
    check_identifier,
    check_positive_int,
    check_rate,
    check_seconds,
    check_session_id,
    check_text,
    check_timeout,
    encode_body,
    encode_inject_body,
    encode_json_value,
)
from osvi_async.errors import APITimeoutError, ClientValidationError, NotFoundError

if TYPE_CHECKING:
    import aiohttp
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from osvi_async.models import (
        ChatSession,
        InjectContextResult,
        MessageReply,
        SupportCommand,
        SupportResult,
    )

T = TypeVar("T")
_NO_LIMIT: Final = 2**62  # the body's parts were each checked against max_context_bytes

DEFAULT_SESSION_CACHE_TTL: Final = 30.0
DEFAULT_SESSION_CACHE_SIZE: Final = 10_000
SUPPORT_COMMANDS: Final = ("takeover", "tell", "whisper", "end", "close")
"""The commands `OsviClient.support` accepts (None: a plain operator message)."""

__all__ = ["OsviClient"]


class _Unset:
    """Marks an option that `with_options` leaves as it is."""

    def __repr__(self) -> str:
        return "UNSET"


_UNSET: Any = _Unset()


class OsviClient:
    """An asyncio client for the OSVI chat API.

    Use it as an async context manager, or call `close()` when done::

        async with OsviClient() as client:
            result = await client.inject_context(session_id, "Voice call: wants a refund.")

    One client holds one connection pool; share it across the whole application and across
    concurrent tasks rather than creating one per request. The pool (an aiohttp `ClientSession`
    with a `TCPConnector(limit=max_connections)`) is created on the first request, inside the
    running event loop.

    Args:
        api_token: The 16-character API token. Defaults to the `OSVI_API_TOKEN` environment
            variable. It is sent in the `API-Token` header and never logged or shown in reprs.
        base_url: The API root. Defaults to `OSVI_BASE_URL`, then `https://api.osvi.ai`. Must
            be https; plain http is accepted only for loopback hosts (local emulators, tests).
        timeout: Seconds one HTTP attempt may take, from connecting to the end of the body.
            Never cut short; on the aiohttp backend a timeout of 1 s or more may fire up to
            1/64 s late (attempts share one timer per 1/64 s, which spares a timer each).
        retry: How failed calls are retried; defaults to `RetryPolicy()` (3 retries).
        max_connections: Most connections open at once; further requests wait for a free one.
        session: An aiohttp `ClientSession` of your own to send requests through. It is used as
            is (its connector limits apply, not `max_connections`) and never closed by us, so
            a request already waiting in its pool when `close()` runs may still go out.
        max_context_bytes: Largest context, in UTF-8 bytes, that is sent at all; a larger one
            is a `ClientValidationError` before anything is uploaded. 1 MiB by default.
        session_cache_ttl: Seconds `inject_context_for_customer` (and bulk items addressed by
            customer) reuse a looked-up active session before looking it up again.
        session_cache_size: Most (customer, agent) pairs kept in that cache; the least
            recently used goes first.
        http_backend: The HTTP stack requests go through: `"aiohttp"` (the default) or
            `"reqwest"`, Rust's reqwest through pyreqwest (`pip install 'osvi-async[reqwest]'`),
            which spends far less CPU per request; both keep the same timeouts, retries,
            size caps and errors. `session` works only with aiohttp.
        tracer_provider: An OpenTelemetry `TracerProvider` to trace calls to (a span per
            call, per attempt and per backoff wait); defaults to the global one, if an SDK
            was configured before this client was built. See docs/observability.md.
        meter_provider: An OpenTelemetry `MeterProvider` to count calls, attempts, retries
            and durations to; defaults to the global one likewise. Without either (and
            without a global SDK), the client records nothing and pays nothing for it.

    Raises:
        ClientValidationError: A missing or malformed token, a bad `base_url`, `timeout`,
            `max_connections` or `max_context_bytes`, a `session` that is not an aiohttp
            `ClientSession`, an unknown `http_backend`, "reqwest" without pyreqwest, or a
            `tracer_provider` / `meter_provider` that is not an OpenTelemetry provider.
    """

    __slots__ = (
        "__weakref__",
        "_config",
        "_origin",
        "_owns_transport",
        "_sessions",
        "_telemetry",
        "_transport",
    )

    def __init__(
        self,
        api_token: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        session: aiohttp.ClientSession | None = None,
        max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES,
        session_cache_ttl: float = DEFAULT_SESSION_CACHE_TTL,
        session_cache_size: int = DEFAULT_SESSION_CACHE_SIZE,
        http_backend: HttpBackend = "aiohttp",
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        # Set first so that __del__ works even if validation below raises.
        self._owns_transport = False
        self._origin: OsviClient | None = None
        _check_retry(retry)
        self._config = ClientConfig.resolve(
            api_token=api_token,
            base_url=base_url,
            timeout=timeout,
            retry=retry,
            max_connections=max_connections,
            max_context_bytes=max_context_bytes,
        )
        # Resolved once: None (OpenTelemetry absent or not configured) costs each call one
        # `is None` check.
        self._telemetry = resolve_telemetry(self._config.base_url, tracer_provider, meter_provider)
        self._transport = open_transport(
            http_backend,
            api_token=self._config.api_token,
            max_connections=self._config.max_connections,
            max_response_bytes=self._config.max_response_bytes,
            timeout=self._config.timeout,
            session=session,
        )
        self._sessions = SessionCache(
            ttl=check_seconds("session_cache_ttl", session_cache_ttl, allow_zero=True),
            size=check_positive_int("session_cache_size", session_cache_size),
        )
        self._owns_transport = True

    @property
    def base_url(self) -> str:
        """The API root requests go to, without a trailing slash."""
        return self._config.base_url

    @property
    def timeout(self) -> float:
        """Default seconds per HTTP attempt."""
        return self._config.timeout

    @property
    def retry(self) -> RetryPolicy:
        """The default retry policy."""
        return self._config.retry

    @property
    def max_context_bytes(self) -> int:
        """Largest context, in UTF-8 bytes, that is sent."""
        return self._config.max_context_bytes

    @property
    def closed(self) -> bool:
        """True once the client (or the client this view was made from) was closed."""
        return self._transport.closed

    def __repr__(self) -> str:
        return f"<OsviClient base_url={self._config.base_url!r} closed={self.closed}>"

    async def __aenter__(self) -> Self:
        if self.closed:
            raise closed_client_error()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool. Idempotent; the client cannot be used afterwards.

        Calls still running end with an error, not a bare `CancelledError`: one waiting for a
        pooled connection raises `ClientClosedError` (nothing was sent), one already sent
        raises `APIConnectionError(request_sent=True)`. Nothing is sent after it returns
        (with a borrowed `session`, a request already queued in that session's pool may).

        On a view made by `with_options`, this does nothing: the original client owns the pool.
        """
        if self._owns_transport:
            await self._transport.close()

    def __del__(self) -> None:
        if getattr(self, "_owns_transport", False) and self._transport.needs_closing:
            warnings.warn(
                f"Unclosed {self!r}: use 'async with OsviClient()' or 'await client.close()'",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )

    def with_options(self, *, timeout: float = _UNSET, retry: RetryPolicy = _UNSET) -> OsviClient:
        """A view of this client with other defaults, sharing its connection pool.

        For one call site that needs, say, a shorter timeout or no retries::

            fast = client.with_options(timeout=2.0, retry=RetryPolicy.none())

        The view needs no closing of its own: `close()` on a view does nothing, and closing
        the original closes the pool for both. Keep the original for closing; a view keeps
        it alive, but does not close it.
        """
        changes: dict[str, Any] = {}
        if timeout is not _UNSET:
            changes["timeout"] = check_timeout(timeout)
        if retry is not _UNSET:
            _check_retry(retry)
            changes["retry"] = retry
        # A shallow copy shares the pool and the session cache; only the defaults differ.
        view = copy.copy(self)
        view._config = attrs.evolve(self._config, **changes)
        view._owns_transport = False
        # Keeps the owner (and its unclosed-pool warning) alive as long as any view is.
        view._origin = self._origin or self
        return view

    async def inject_context(
        self,
        session_id: str,
        context: str,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        may_have_been_applied: bool = False,
    ) -> InjectContextResult:
        """Append one free-text entry to a chat session's context.

        The session keeps only its 5 most recent entries (FIFO): appending a sixth drops the
        oldest. The call is not idempotent; see `RetryPolicy` for what retrying may double.

        Args:
            session_id: The session UUID (`data.id` from creating the session).
            context: The text to append; must contain something other than whitespace.
            timeout: Seconds for each HTTP attempt; defaults to the client's `timeout`.
            retry: Retry policy for this call; defaults to the client's `retry`.
            may_have_been_applied: Set when resending an entry whose earlier call failed with
                `error.may_have_been_applied`: the result is then always flagged
                `possible_duplicate` (nothing says whether that earlier send has settled).

        Returns:
            The session's context bucket after the append, and how many attempts it took.

        Raises:
            ClientValidationError: Bad `session_id` or `context`; nothing was sent.
            ClientClosedError: The client was closed, before the call or while it waited
                for a pooled connection; nothing was sent.
            APIStatusError: The API answered with an error (a subclass per status) and
                retrying did not help or was not allowed.
            APIConnectionError: No answer came back (`APITimeoutError` for timeouts).
            ResponseDecodeError: A success status with a body that is not the documented shape.
        """
        if self._transport.closed:
            raise closed_client_error()
        session_id = check_session_id(session_id)
        if may_have_been_applied is not False:
            may_have_been_applied = check_bool("may_have_been_applied", may_have_been_applied)
        context = check_context(context)
        body = encode_inject_body(context, self._config.max_context_bytes)
        attempt_timeout = self._config.timeout if timeout is None else check_timeout(timeout)
        if retry is not None:
            _check_retry(retry)
        policy = self._config.retry if retry is None else retry
        return await call(
            self._transport,
            INJECT_CONTEXT,
            self._inject_url(session_id),
            body,
            timeout=attempt_timeout,
            policy=policy,
            session_id=session_id,
            entry=context,
            resent=may_have_been_applied,
            telemetry=self._telemetry,
        )

    async def inject_context_for_customer(
        self,
        customer_id: str,
        agent_uuid: str,
        context: str,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        may_have_been_applied: bool = False,
    ) -> InjectContextResult:
        """Append one entry to the customer's active session with the agent.

        For programs that know who the customer is, not which session they are in (a voice
        call ended, a ticket changed)::

            await client.inject_context_for_customer(
                "+15551112222", "agent_IsZ3Q6Sf_60Eh26XQMGbz-R_og", "Voice call: wants a refund."
            )

        The session is looked up with `get_active_session` and kept in a small per-client
        cache (`session_cache_ttl`, `session_cache_size`); concurrent calls for one pair share
        one lookup. If the cached session was closed meanwhile (404 `session_not_found`,
        certainly not applied), the pair is looked up again and the entry goes there (up to
        three times, if sessions keep closing).
        `may_have_been_applied=True` marks a resend, as for `inject_context`.

        Raises:
            NotFoundError: The customer has no active session with this agent (open one with
                `create_session` or `send_message`).
            OsviError: The same errors as `inject_context`.
        """
        if self._transport.closed:
            raise closed_client_error()
        customer_id = check_identifier("customer_id", customer_id)
        agent_uuid = check_identifier("agent_uuid", agent_uuid)
        resent = check_bool("may_have_been_applied", may_have_been_applied)
        context = check_context(context)
        body = encode_inject_body(context, self._config.max_context_bytes)
        attempt_timeout, policy = self._call_options(timeout, retry)
        started = time.monotonic()

        async def look_up(customer_id: str, agent_uuid: str) -> str:
            return await self._look_up_session_id(
                customer_id, agent_uuid, attempt_timeout, _deadline_left(policy, started)
            )

        async def inject(session_id: str) -> InjectContextResult:
            return await call(
                self._transport,
                INJECT_CONTEXT,
                self._inject_url(session_id),
                body,
                timeout=attempt_timeout,
                policy=_deadline_left(policy, started),
                session_id=session_id,
                entry=context,
                resent=resent,
                telemetry=self._telemetry,
            )

        # Waiting for a lookup another call started takes no longer than this call's own
        # lookup could: its deadline, or all its attempts timing out.
        wait_limit = policy.deadline or attempt_timeout * (policy.max_retries + 1)
        run = inject_for_customer(
            self._sessions, customer_id, agent_uuid, look_up, inject, wait_limit=wait_limit
        )
        if self._telemetry is None:
            return await run
        # One span around the lookup and the inject: without a span of the caller's, they
        # would be two unrelated root traces.
        return await self._telemetry.operation("inject_context_for_customer", run)

    async def create_session(
        self,
        agent_uuid: str,
        customer_id: str,
        *,
        input_fields: Mapping[str, Any] | None = None,
        context: Sequence[str] | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> ChatSession:
        """Open a chat session for the customer with the agent.

        The API first closes the customer's active session with that agent, if any: at most
        one session per pair is active. Because of that, a failure after which the session
        may have been created is not retried (a retry would close it again); the error says
        `may_have_been_applied` and how to check, with `get_active_session`.

        Args:
            agent_uuid: The agent to chat with (`agent_...`).
            customer_id: Your stable identifier for the customer (often a phone number).
            input_fields: Facts about the customer the agent can use (JSON values).
            context: Initial context entries; the session keeps the 5 most recent.
            timeout: Seconds for each HTTP attempt; defaults to the client's `timeout`.
            retry: Retry policy for this call; defaults to the client's `retry`.

        Raises:
            ClientValidationError: Blank ids, `input_fields` that is not a mapping of JSON
                values, or a `context` entry that is blank or too long; nothing was sent.
            OsviError: The same errors as `inject_context` (a 422 is a `BadRequestError`
                with `errors`).
        """
        agent_uuid = check_identifier("agent_uuid", agent_uuid)
        customer_id = check_identifier("customer_id", customer_id)
        request: dict[str, object] = {"agent_uuid": agent_uuid, "customer_id": customer_id}
        if input_fields is not None:
            if not isinstance(input_fields, Mapping):
                raise ClientValidationError(
                    f"input_fields must be a mapping, got {type(input_fields).__name__}"
                )
            input_fields = dict(input_fields)
            encode_json_value("input_fields", input_fields, self._config.max_context_bytes)
            request["input_fields"] = input_fields
        if context is not None:
            request["context"] = self._context_entries(context)
        body = encode_json_value("create_session's body", request, _NO_LIMIT)
        session = await self._call_by_customer(
            CREATE_SESSION, self._url("/v1/chat/session"), body, customer_id, agent_uuid,
            timeout, retry,
        )  # fmt: skip
        self._sessions.remember(customer_id, agent_uuid, session.id)
        return session

    async def get_active_session(
        self,
        customer_id: str,
        agent_uuid: str,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> ChatSession:
        """The customer's active session with the agent.

        A read: every transient failure is retried.

        Raises:
            NotFoundError: The customer has no active session with this agent.
            ClientValidationError: A blank `customer_id` or `agent_uuid`; nothing was sent.
            OsviError: The same errors as `inject_context`.
        """
        customer_id = check_identifier("customer_id", customer_id)
        agent_uuid = check_identifier("agent_uuid", agent_uuid)
        return await self._active_session(customer_id, agent_uuid, timeout, retry)

    async def get_active_sessions(
        self,
        customer_id: str,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> Mapping[str, ChatSession]:
        """Every active session of the customer, keyed by agent uuid (read-only).

        Empty when there is none, whether the API answers with an empty object or its JSON
        404 (a 404 without the API's JSON body, such as a proxy's page, is raised).
        A read: every transient failure is retried.
        """
        customer_id = check_identifier("customer_id", customer_id)
        url = self._url(f"/v1/chat/session/active?customer_id={quote(customer_id, safe='')}")
        try:
            return await self._call_by_customer(
                GET_ACTIVE_SESSIONS, url, None, customer_id, None, timeout, retry
            )
        except NotFoundError as error:
            if error.code is None:
                raise  # not the API's JSON 404 (a proxy's page): base_url is probably wrong
            return MappingProxyType({})

    async def send_message(
        self,
        agent_uuid: str,
        customer_id: str,
        content: str,
        *,
        session_id: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> MessageReply:
        """Deliver a customer's message to the agent and return the agent's reply.

        Without `session_id` the API uses the customer's active session with the agent,
        resuming or opening one as needed. The call runs an agent turn, so a failure after
        which the message may have been delivered is not retried (the customer would see
        the exchange twice): the error says `may_have_been_applied` and how to check.

        Raises:
            ClientValidationError: Blank `agent_uuid`, `customer_id` or `content`, or a
                `session_id` that is not a session UUID; nothing was sent.
            OsviError: The same errors as `inject_context`.
        """
        agent_uuid = check_identifier("agent_uuid", agent_uuid)
        customer_id = check_identifier("customer_id", customer_id)
        content = check_text("content", content, max_bytes=self._config.max_context_bytes)
        request = {"agent_uuid": agent_uuid, "customer_id": customer_id, "content": content}
        if session_id is not None:
            request["session_id"] = session_id = check_session_id(session_id)
        body = encode_body(dict(request))
        reply = await self._call_by_customer(
            SEND_MESSAGE, self._url("/v1/chat/inbound"), body, customer_id, agent_uuid,
            timeout, retry, session_id=session_id or "",
        )  # fmt: skip
        if session_id is None:
            # The API chose the session: it is the pair's active one. A session named by the
            # caller may be any session, so it says nothing about the pair.
            self._sessions.remember(customer_id, agent_uuid, reply.session_id)
        return reply

    async def support(
        self,
        session_id: str,
        command: SupportCommand | None = None,
        message: str | None = None,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> SupportResult:
        """Send an operator command, or a plain operator message, to a session.

        Commands: `takeover` (a human takes the session: mode "support", the agent stops
        answering), `tell` (guidance for the agent, which runs a turn and returns `reply`;
        needs `message`), `whisper` (private guidance for the agent's next turn), `end` (back
        to the agent), `close` (end the session for good). With `command=None`, `message` is
        sent to the customer as the operator; the API accepts that only in support mode.

        What is retried after a failure that may have been applied depends on the command:
        takeover (without a message), end and close set a state, so they are retried; tell, a
        plain message and a takeover with a message reach the customer or run an agent turn,
        so they are not (the error says `may_have_been_applied`); whisper is retried and the
        result flagged `possible_duplicate`.

        Raises:
            ClientValidationError: An unknown `command`, a missing `message` for `tell`,
                `whisper` or a plain message, a blank `message`, or a bad `session_id`;
                nothing was sent.
            EngineRejectedError: The engine refused the command (`tell` during a takeover).
            OsviError: The same errors as `inject_context`.
        """
        session_id = check_session_id(session_id)
        if command is not None and command not in SUPPORT_COMMANDS:
            raise ClientValidationError(
                f"command must be one of {', '.join(SUPPORT_COMMANDS)} or None, got {command!r}"[
                    :200
                ]
            )
        request: dict[str, object] = {}
        if command is not None:
            request["command"] = str.__str__(command)
        if message is not None:
            request["message"] = check_text(
                "message", message, max_bytes=self._config.max_context_bytes
            )
        elif command in (None, "tell", "whisper"):
            # A whisper is its message: without one there is nothing to give the agent.
            what = "a plain operator message" if command is None else command
            raise ClientValidationError(f"message is required for {what}")
        endpoint = SUPPORT[command]
        if message is not None and command is not None:
            endpoint = SUPPORT_WITH_MESSAGE.get(command, endpoint)
        attempt_timeout, policy = self._call_options(timeout, retry)
        result = await call(
            self._transport,
            endpoint,
            self._url(f"/v1/chat/session/{session_id}/support"),
            encode_body(request),
            timeout=attempt_timeout,
            policy=policy,
            session_id=session_id,
            entry=message or "",
            telemetry=self._telemetry,
        )
        if command == "close":
            self._sessions.forget(session_id)
        return result

    async def close_session(
        self,
        session_id: str,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> SupportResult:
        """Close a session for good: `support(session_id, "close")`."""
        return await self.support(session_id, "close", timeout=timeout, retry=retry)

    async def _call_by_customer(  # noqa: PLR0917 - private; one call's description
        self,
        endpoint: Endpoint[T],
        url: str,
        body: bytes | None,
        customer_id: str,
        agent_uuid: str | None,
        timeout: float | None,
        retry: RetryPolicy | None,
        *,
        session_id: str = "",
        gate: AttemptGate | None = None,
    ) -> T:
        """Run a call addressed by customer (and agent): no session id in the path."""
        if self._transport.closed:
            raise closed_client_error()
        attempt_timeout, policy = self._call_options(timeout, retry)
        # Errors raised to the caller name the customer (the caller's own data); log records
        # name a pseudonym, so that no customer id (personal data) lands in a log store.
        target, log_target = f"customer {customer_id!r}", customer_pseudonym(customer_id)
        if agent_uuid is not None:
            target += f" with agent {agent_uuid!r}"
            log_target += f" with agent {agent_uuid!r}"
        return await call(
            self._transport,
            endpoint,
            url,
            body,
            timeout=attempt_timeout,
            policy=policy,
            session_id=session_id,
            target=target,
            log_target=log_target,
            gate=gate,
            telemetry=self._telemetry,
        )

    async def _look_up_session_id(
        self,
        customer_id: str,
        agent_uuid: str,
        timeout: float,
        policy: RetryPolicy,
        gate: AttemptGate | None = None,
    ) -> str:
        """The session cache's lookup, with the calling code's timeout and retry policy (and,
        in a bulk run, its flow control)."""
        session = await self._active_session(customer_id, agent_uuid, timeout, policy, gate)
        return session.id

    async def _active_session(
        self,
        customer_id: str,
        agent_uuid: str,
        timeout: float | None,
        retry: RetryPolicy | None,
        gate: AttemptGate | None = None,
    ) -> ChatSession:
        """GET the pair's active session (ids already checked) and remember it."""
        session = await self._call_by_customer(
            GET_ACTIVE_SESSION,
            self._active_url(customer_id, agent_uuid),
            None,
            customer_id,
            agent_uuid,
            timeout,
            retry,
            gate=gate,
        )
        self._sessions.remember(customer_id, agent_uuid, session.id)
        return session

    def _call_options(
        self, timeout: float | None, retry: RetryPolicy | None
    ) -> tuple[float, RetryPolicy]:
        attempt_timeout = self._config.timeout if timeout is None else check_timeout(timeout)
        if retry is None:
            return attempt_timeout, self._config.retry
        _check_retry(retry)
        return attempt_timeout, retry

    def _context_entries(self, context: object) -> list[str]:
        if isinstance(context, str | bytes) or not isinstance(context, Sequence):
            raise ClientValidationError(
                f"context must be a list of strings, got {type(context).__name__}"
            )
        entries: list[str] = []
        for index, entry in enumerate(context):
            try:
                checked = check_context(entry)
                encode_inject_body(checked, self._config.max_context_bytes)  # size, Unicode
            except ClientValidationError as exc:
                raise ClientValidationError(f"context[{index}]: {exc}") from None
            entries.append(checked)
        return entries

    def inject_many(
        self,
        items: Iterable[InjectItem] | AsyncIterable[InjectItem],
        *,
        concurrency: int | Literal["auto"] = DEFAULT_CONCURRENCY,
        max_concurrency: int | None = None,
        rate_limit: float | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        retry_budget: RetryBudget | None = DEFAULT_RETRY_BUDGET,
        circuit_breaker: CircuitBreaker | None = DEFAULT_CIRCUIT_BREAKER,
        max_pending: int | None = None,
        hold_on_failure: bool = True,
        on_send: Callable[[int], None] | None = None,
    ) -> BulkRun:
        """Inject many entries concurrently; yields one `InjectOutcome` per item as each ends.

        Guarantees:

        - exactly one outcome per input item; a failure (including an invalid item) is an
          outcome, never an exception that ends the run;
        - entries for one session are sent one at a time, in input order; different sessions
          proceed in parallel, so a slow or retrying session delays only itself; an item
          addressed by customer (`CustomerInjectRequest`) joins its session's lane once its
          session is looked up, in input order, so mixing both addresses keeps the order;
        - when an item fails in a way a later attempt could fix (not a 400, 404, an engine
          refusal ...), the later items of its session are *held*: not sent, yielded with
          `ItemHeldError(waiting_for=<its index>)`, so that resending them after it keeps the
          session in input order (`hold_on_failure=False` sends them anyway);
        - at most `concurrency` requests in flight (with `"auto"`, a limit learned from the
          API's latency and refusals, never above `max_concurrency`; see docs/bulk.md), and
          at most `max_pending` items pulled
          from the input and not yet handed to you, so memory does not grow with the input
          (a generator of millions of items is fine);
        - retries are rationed by `retry_budget` and paused by `circuit_breaker` when the API
          keeps failing, so an outage does not multiply the load.

        Example::

            async with client.inject_many(rows, concurrency=64) as run:
                async for outcome in run:
                    if not outcome.ok:
                        log.warning("item %d failed: %s", outcome.index, outcome.error)
            print(run.summary)

        Args:
            items: `InjectRequest`s, `CustomerInjectRequest`s (looked up through the
                client's session cache, with this run's timeout and retry policy) or
                `(session_id, context)` tuples, from an iterable or an async iterable; pulled
                lazily.
            concurrency: Most requests in flight at once (and worker tasks), or `"auto"`: the
                limit starts at 8 and adapts to what the API serves without queueing or
                refusing, between 1 and `max_concurrency`; `run.concurrency_limit` and
                `summary.concurrency_limit` show it.
            max_concurrency: With `concurrency="auto"`, the most requests in flight the limit
                may reach; default 256. The client's `max_connections` caps it too.
            rate_limit: Most attempts started per second across the run, or None.
            timeout: Seconds per HTTP attempt; defaults to the client's.
            retry: Retry policy per item; defaults to the client's.
            retry_budget: Cap on retries across the run; None for no cap.
            circuit_breaker: When to pause sending during an outage; None to never pause.
            max_pending: Most items pulled and not yet handed over; default `4 * concurrency`,
                at least 256.
            hold_on_failure: Hold a session's later items once one of its items failed in a
                way a later attempt could fix (the default); False sends them regardless of
                order.
            on_send: Called with an item's index, synchronously, right before its first
                attempt goes out (after any flow-control wait); for recording intent. If it
                raises, the item fails unsent. Not called for held or invalid items.

        Returns:
            A `BulkRun`: iterate it for outcomes, then read `summary` and `leftovers`;
            `run.drain()` stops it gracefully.

        Raises:
            ClientValidationError: An argument is invalid (raised here, before anything runs).
            ClientClosedError: The client is closed.
        """
        if self._transport.closed:
            raise closed_client_error()
        adaptive = concurrency == "auto"
        if adaptive:
            concurrency = (
                DEFAULT_MAX_CONCURRENCY
                if max_concurrency is None
                else check_positive_int("max_concurrency", max_concurrency)
            )
        else:
            given: object = concurrency  # any str but "auto" gets its own message
            if isinstance(given, str):
                raise ClientValidationError(f'concurrency must be an int or "auto", got {given!r}')
            concurrency = check_positive_int("concurrency", concurrency)
            if max_concurrency is not None:
                raise ClientValidationError(
                    'max_concurrency applies only to concurrency="auto"; '
                    f"got concurrency={concurrency!r}"
                )
        if max_pending is None:
            max_pending = max(256, 4 * concurrency)
        max_pending = check_positive_int("max_pending", max_pending)
        if rate_limit is not None:
            rate_limit = check_rate(rate_limit)
        attempt_timeout = self._config.timeout if timeout is None else check_timeout(timeout)
        _check_retry(retry)
        _check_optional("retry_budget", retry_budget, RetryBudget)
        _check_optional("circuit_breaker", circuit_breaker, CircuitBreaker)
        hold_on_failure = check_bool("hold_on_failure", hold_on_failure)
        if on_send is not None:
            check_callable("on_send", on_send)
        engine = _Engine(
            transport=self._transport,
            url_for=self._inject_url,
            sessions=self._sessions,
            look_up=self._look_up_session_id,
            max_context_bytes=self._config.max_context_bytes,
            items=items,
            concurrency=concurrency,
            max_pending=max_pending,
            timeout=attempt_timeout,
            policy=self._config.retry if retry is None else retry,
            flow=FlowControl(
                concurrency=concurrency,
                budget=retry_budget,
                breaker=circuit_breaker,
                rate_limit=rate_limit,
            ),
            hold_on_failure=hold_on_failure,
            on_send=on_send,
            adaptive=adaptive,
            telemetry=self._telemetry,
        )
        return BulkRun(engine)

    def _inject_url(self, session_id: str) -> str:
        return f"{self._config.base_url}/v1/chat/session/{session_id}/inject_context"

    def _url(self, path: str) -> str:
        return f"{self._config.base_url}{path}"

    def _active_url(self, customer_id: str, agent_uuid: str) -> str:
        return self._url(
            f"/v1/chat/session/active?customer_id={quote(customer_id, safe='')}"
            f"&agent_uuid={quote(agent_uuid, safe='')}"
        )


def _deadline_left(policy: RetryPolicy, started: float) -> RetryPolicy:
    """`policy` with its deadline counted from `started`: a call made of several requests (a
    lookup, then an injection) keeps to one deadline."""
    if policy.deadline is None:
        return policy
    left = policy.deadline - (time.monotonic() - started)
    if left <= 0:
        raise APITimeoutError(
            f"The retry deadline of {policy.deadline:g} s passed before the next request "
            "could be sent",
            request_sent=False,
        )
    return attrs.evolve(policy, deadline=left)


def _check_retry(retry: object) -> None:
    _check_optional("retry", retry, RetryPolicy)


def _check_optional(name: str, value: object, expected: type) -> None:
    """Refuse a value that is neither None nor an instance of `expected` (an options object)."""
    if value is not None and not isinstance(value, expected):
        raise ClientValidationError(
            f"{name} must be a {expected.__name__} or None, got {type(value).__name__}"
        )
