"""OsviEmulator: a real HTTP server on 127.0.0.1 that behaves like the OSVI Chat v1 API.

It listens on a real socket so the client under test goes through its whole stack (connection
pool, timeouts, retries), and it records what it saw so a test can assert on the server's side.
The observation methods are synchronous and must be called from the event loop's thread, the
thread the emulator runs in.
"""

from __future__ import annotations

import asyncio
import secrets
import string
import uuid
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Final, Self

from aiohttp import web

from osvi_async.testing._app import EmulatorApp
from osvi_async.testing._capacity import CapacityModel, CapacityStats
from osvi_async.testing._chat_routes import AgentReply, default_agent_reply
from osvi_async.testing._faults import ENDPOINT_NAMES, FaultPlan
from osvi_async.testing._state import EmulatorStats, Observations, SessionStore

__all__ = ["DEFAULT_HOST", "OsviEmulator", "generate_api_token"]

DEFAULT_HOST: Final = "127.0.0.1"
"""Loopback only: the emulator is a test double with a known token, not a service."""

API_TOKEN_LENGTH: Final = 16
"""Length of the API's account tokens, and of the tokens the emulator generates."""

_SHUTDOWN_TIMEOUT_SECONDS: Final = 1.0
"""How long ``stop()`` lets a request still being answered finish before cancelling it."""

_TOKEN_ALPHABET: Final = string.ascii_letters + string.digits


def generate_api_token() -> str:
    """Return a random 16-character token, shaped like an OSVI API token."""
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(API_TOKEN_LENGTH))


MAX_REQUEST_BYTES: Final = 8 * 1024 * 1024
"""Largest request body the emulator reads: a 1 MiB context escaped six times over (every
character written as a six-character escape) still fits."""


class _CountingServer(web.Server):
    """A low-level aiohttp server that also counts TCP connections as they come and go.

    ``connection_made``/``connection_lost`` are the calls every ``RequestHandler`` (one per TCP
    connection) makes to its server, once each, so counting there counts real connections,
    including ones dropped before or without a request.
    """

    def __init__(self, app: EmulatorApp, observations: Observations, **kwargs: Any) -> None:
        super().__init__(
            app.handle, handler_cancellation=True, request_factory=self._request, **kwargs
        )
        self._observations = observations
        # Every connection's transport until it is lost, so `close_leftovers` can close any
        # that aiohttp's own shutdown missed (ones accepted while it was stopping).
        self._transports: dict[web.RequestHandler, asyncio.Transport] = {}

    def close_leftovers(self) -> None:
        """Close the transports of connections still open after the server shut down."""
        transports, self._transports = self._transports, {}
        for transport in transports.values():
            transport.abort()

    @staticmethod
    def _request(
        message: Any,
        payload: Any,
        protocol: web.RequestHandler,
        writer: Any,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # aiohttp refuses bodies over 1 MiB by default, below what the client sends: a
        # context of max_context_bytes (1 MiB) plus its JSON framing and escapes.
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=MAX_REQUEST_BYTES,
        )

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        self._observations.connection_opened()
        self._transports[handler] = transport
        super().connection_made(handler, transport)

    def connection_lost(
        self, handler: web.RequestHandler, exc: BaseException | None = None
    ) -> None:
        self._observations.connection_closed()
        self._transports.pop(handler, None)
        super().connection_lost(handler, exc)


class OsviEmulator:
    """The OSVI Chat v1 API, emulated in memory and served on 127.0.0.1.

    Use it as ``async with OsviEmulator() as emulator:``, then point a client at
    ``emulator.base_url`` with ``emulator.api_token``. Without a port it listens on a free one.

    Server rules it keeps, as the API does: the ``API-Token`` header must equal ``api_token``;
    one active session per (customer, agent), opening a new one closes the old; a session's
    context bucket keeps the 5 most recent entries; a closed session answers 404.

    The emulated agent (``POST /v1/chat/inbound`` and the support ``tell`` command) replies
    ``agent_reply(session_id, content)``, by default ``"Emulated agent reply to: <content>"``;
    it does not reply (``""``) while an operator holds the session (support mode). A customer
    message containing the word human, person, operator, agent or representative (any case,
    plural too) sets the session's ``help_requested``. ``messages`` is the transcript.

    Args:
        api_token: The token to accept; a random 16-character one when None.
        host: Address to bind; keep the default loopback address.
        port: Port to bind; 0 picks a free port.
        fault_plan: Failures to inject; none when None. Can be replaced while running.
        agent_reply: The emulated agent, a callable ``(session_id, content) -> reply``; for
            ``tell``, ``content`` is the operator's guidance. Can be replaced while running
            (the ``agent_reply`` attribute).
        capacity: How much the API serves at once (see ``CapacityModel``); unlimited when
            None. Can be replaced while running.
    """

    def __init__(
        self,
        *,
        api_token: str | None = None,
        host: str = DEFAULT_HOST,
        port: int = 0,
        fault_plan: FaultPlan | None = None,
        agent_reply: AgentReply | None = None,
        capacity: CapacityModel | None = None,
    ) -> None:
        token = generate_api_token() if api_token is None else api_token
        if not token or token != token.strip() or not token.isprintable():
            raise ValueError("api_token must be non-empty printable text without outer spaces")
        self._api_token = token
        self._host = host
        self._requested_port = port
        self._store = SessionStore()
        self._observations = Observations()
        self._app: EmulatorApp | None = None
        self._initial_plan = fault_plan if fault_plan is not None else FaultPlan()
        self._agent_reply = default_agent_reply if agent_reply is None else agent_reply
        self._capacity = capacity
        self._runner: web.ServerRunner | None = None
        self._port: int | None = None
        self._stopped = False

    def __repr__(self) -> str:
        # Never the token: reprs end up in logs and test reports.
        where = self.base_url if self._port is not None else "not started"
        return f"<OsviEmulator {where}>"

    @property
    def api_token(self) -> str:
        """The token the emulator accepts in the ``API-Token`` header."""
        return self._api_token

    @property
    def port(self) -> int:
        """The port the emulator listens on. Raises RuntimeError before ``start()``."""
        if self._port is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, the client's ``base_url``. Raises before ``start()``."""
        return f"http://{self._host}:{self.port}"

    @property
    def fault_plan(self) -> FaultPlan:
        """The failures being injected; assign a new plan to change them, even while running."""
        return self._app.fault_plan if self._app is not None else self._initial_plan

    @fault_plan.setter
    def fault_plan(self, plan: FaultPlan) -> None:
        self._initial_plan = plan
        if self._app is not None:
            self._app.fault_plan = plan

    @property
    def agent_reply(self) -> AgentReply:
        """The emulated agent, ``(session_id, content) -> reply``; assign one to change it."""
        return self._agent_reply

    @agent_reply.setter
    def agent_reply(self, agent_reply: AgentReply) -> None:
        self._agent_reply = agent_reply
        if self._app is not None:
            self._app.agent_reply = agent_reply

    @property
    def capacity(self) -> CapacityModel | None:
        """How much the API serves at once; None for no limit.

        Assign a model to change it, even while running: the new one starts from a fresh state
        (its clock starts at its own first request, its stats at zero). Requests already
        waiting or in service under the old model finish under it.
        """
        return self._capacity

    @capacity.setter
    def capacity(self, model: CapacityModel | None) -> None:
        self._capacity = model
        if self._app is not None:
            self._app.use_capacity(model)

    def capacity_stats(self) -> CapacityStats:
        """What the current capacity model did: served, refused, peaks, a per-second timeline.

        Zeros and an empty timeline before the model's first request, and without a model.
        """
        gate = self._app.capacity if self._app is not None else None
        if gate is not None:
            return gate.stats()
        limit = 0 if self._capacity is None else self._capacity.limit
        return CapacityStats(limit=limit)

    async def start(self) -> None:
        """Bind the socket and start answering. Raises RuntimeError if called twice."""
        if self._runner is not None or self._stopped:
            raise RuntimeError("an OsviEmulator can be started only once")
        self._app = EmulatorApp(
            api_token=self._api_token,
            store=self._store,
            observations=self._observations,
            fault_plan=self._initial_plan,
            agent_reply=self._agent_reply,
        )
        self._app.use_capacity(self._capacity)
        # No access log: the emulator should not write request lines into the user's test logs.
        server = _CountingServer(self._app, self._observations, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_TIMEOUT_SECONDS)
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, self._host, self._requested_port)
            await site.start()
        except BaseException:
            await self.stop()
            raise
        self._port = site.port

    async def stop(self) -> None:
        """Release hanging requests, close every connection and the socket. Idempotent."""
        self._stopped = True
        if self._app is not None:
            self._app.release()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            server = runner.server
            if isinstance(server, _CountingServer):
                # A connection accepted while aiohttp was stopping is not closed by it, and
                # would surface as a ResourceWarning in the user's test run.
                server.close_leftovers()
                await asyncio.sleep(0)  # let the aborted transports report their loss
        if self._app is not None:
            await self._app.cancel_detached()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def create_session(
        self,
        *,
        agent_uuid: str = "agent_emulator",
        customer_id: str | None = None,
        context: Iterable[str] = (),
    ) -> str:
        """Open a session directly (no HTTP, no faults) and return its id.

        Follows the create-session rules: the pair's previous active session is closed, and
        only the 5 most recent non-blank ``context`` entries are kept. ``customer_id`` defaults
        to a new unique id, so each call opens an independent session.
        """
        customer = f"customer_{uuid.uuid4().hex[:12]}" if customer_id is None else customer_id
        session = self._store.create(agent_uuid=agent_uuid, customer_id=customer, context=context)
        return session.id

    def close_session(self, session_id: str) -> None:
        """Close a session, as the support ``close`` command does. Raises KeyError if unknown."""
        self._store.close(session_id)

    def make_dormant(self, session_id: str) -> None:
        """Mark a session dormant (idle), as the platform does after a while.

        It stays the customer's session with its agent: the active lookup still finds it
        (``status: "dormant"``), and the customer's next message resumes it (``"active"``).

        Raises:
            KeyError: No session has this id.
            ValueError: The session is closed.
        """
        self._store.make_dormant(session_id)

    def bucket(self, session_id: str) -> tuple[str, ...]:
        """The session's context bucket now: at most 5 entries, oldest first.

        Raises:
            KeyError: No session has this id.
        """
        return tuple(self._store.require(session_id).bucket)

    def applied(self, session_id: str) -> tuple[str, ...]:
        """Every entry inject_context ever applied to the session, in order, never capped.

        Initial context given at creation is not included (see ``bucket``). An entry sent
        twice (for example by a retry after an ambiguous failure) appears twice.

        Raises:
            KeyError: No session has this id.
        """
        return tuple(self._store.require(session_id).applied)

    def messages(self, session_id: str) -> list[tuple[str, str]]:
        """The session's transcript: ``(role, text)`` pairs, oldest first, never capped.

        Roles: ``"customer"`` (inbound messages), ``"agent"`` (the agent's replies),
        ``"operator"`` (an operator's text to the customer: plain support messages and the
        message given with ``takeover``, ``end`` or ``close``), ``"whisper"`` (private guidance
        for the agent: ``whisper`` and the guidance of ``tell``; the customer never sees it).
        A change applied before an ambiguous fault is here like any other.

        Raises:
            KeyError: No session has this id.
        """
        return list(self._store.require(session_id).transcript)

    def requests_for(self, session_id: str) -> int:
        """How many inject_context requests named this session, whatever their outcome."""
        return self._observations.inject_requests_for(session_id)

    def requests(self, endpoint: str) -> int:
        """How many requests reached ``endpoint`` since start, whatever their outcome.

        Every request routed to the endpoint counts, faulted, refused (401, 404, 422) or not;
        ``reset_stats`` leaves these counts alone, like ``requests_for``.

        Args:
            endpoint: One of ``ENDPOINT_NAMES``: ``"create_session"``, ``"active_session"``,
                ``"inbound"``, ``"support"``, ``"inject_context"``.

        Raises:
            ValueError: ``endpoint`` is not one of those names.
        """
        if endpoint not in ENDPOINT_NAMES:
            names = ", ".join(ENDPOINT_NAMES)
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of: {names}")
        return self._observations.endpoint_requests(endpoint)

    @property
    def stats(self) -> EmulatorStats:
        """A snapshot of the request, concurrency, connection and fault counters."""
        return self._observations.snapshot()

    def reset_stats(self) -> None:
        """Zero the counters in ``stats``; peaks restart from the current open/in-flight values."""
        self._observations.reset()
