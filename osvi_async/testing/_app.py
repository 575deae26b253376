"""Request handling for the emulator: routing, auth, validation, faults, in the API's order.

The order of checks is part of what the emulator promises, because a client's error handling
depends on which answer wins when several apply:

1. Route: unknown path -> 404 ``not_found``; known path, wrong method -> 405. A routed request
   is counted for its endpoint (``OsviEmulator.requests``) whatever happens next.
   On an endpoint a ``CapacityModel`` covers, auth comes next (401), then the capacity gate:
   wait for a slot, refused (429 or 503 with ``Retry-After``) when the queue is full, then the
   service time holding the slot; then the steps below. Such a request runs in its own task, so
   a client that hangs up does not free its place: it is served, and applied, all the same.
2. Fault decision (the ``FaultPlan``'s covered endpoints and scripts), then latency.
3. Reverse-proxy faults (HTML 502/503/504, hang): they happen before the app sees the request.
4. Auth: ``API-Token`` missing or wrong -> 401 ``unauthorized``.
5. Rate limit fault -> 429 with ``Retry-After``.
6. Validation. A session in the path is looked up first (unknown or closed -> 404
   ``session_not_found``); then the body (not a JSON object -> 400 ``invalid_json``; 400 codes
   for inject_context; 422 ``errors`` for create-session, inbound, support and the active
   lookup's query). Inbound's optional ``session_id`` is in the body, so it is looked up after
   the body is validated.
7. Chat-engine faults: ``engine_error``/``engine_rejected`` answer 502 without applying;
   ``ambiguous_502``/``ambiguous_drop`` apply the change and then fail. The engine's own
   refusals (the support rules) come after the faults, as they come from the engine.

Steps 6 and 7 run without awaiting in between, so a change is never applied to a session that
another request closed meanwhile. The endpoints' own rules live in ``_session_routes`` and
``_chat_routes``.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Final, NoReturn

import attrs
from aiohttp import web

from osvi_async.testing._capacity import Admission, CapacityGate, CapacityModel
from osvi_async.testing._chat_routes import (
    AgentReply,
    default_agent_reply,
    prepare_inbound,
    prepare_support,
)
from osvi_async.testing._faults import FaultKind, FaultPlan
from osvi_async.testing._responses import Commit, Prepared, engine_rejected, error, json_object
from osvi_async.testing._session_routes import prepare_active, prepare_create, prepare_inject
from osvi_async.testing._state import ChatSession, Observations, SessionStore

__all__ = ["EmulatorApp"]

# What the reverse proxy in front of the API answers; the body is HTML, not the JSON envelope.
_PROXY_PAGES: Final = {
    FaultKind.PROXY_HTML_502: (502, "Bad Gateway"),
    FaultKind.UNAVAILABLE: (503, "Service Temporarily Unavailable"),
    FaultKind.GATEWAY_TIMEOUT: (504, "Gateway Time-out"),
}
_SESSION_ACTION: Final = re.compile(
    r"/v1/chat/session/(?P<id>[^/]+)/(?P<action>inject_context|support)"
)
_ROUTES: Final = {
    "/v1/chat/session": ("create_session", "POST"),
    "/v1/chat/session/active": ("active_session", "GET"),
    "/v1/chat/inbound": ("inbound", "POST"),
}


def _engine_error() -> web.Response:
    body = {"success": False, "error": "Python engine unreachable", "upstream_body": None}
    return web.json_response(body, status=502)


def _engine_failed_after_commit(request: web.BaseRequest) -> web.Response:
    """The engine took the change, then failed: a 5xx relayed as a 502 (the ambiguous case).

    Unlike ``Python engine unreachable`` (nothing reached the engine), this says the engine
    answered, so a client cannot know whether the change was applied.
    """
    body = {
        "success": False,
        "error": f"Python engine returned 500 for {request.method} {request.path}",
        "upstream_body": None,
    }
    return web.json_response(body, status=502)


def _proxy_page(kind: FaultKind) -> web.Response:
    status, reason = _PROXY_PAGES[kind]
    title = f"{status} {reason}"
    html = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return web.Response(status=status, text=html, content_type="text/html")


def _capacity_refusal(gate: CapacityGate) -> web.Response:
    """The capacity model's refusal: the rate-limit fault's 429, or the proxy's 503 page."""
    model = gate.model
    if model.refusal_status == 429:
        response = error(429, "rate_limited")
    else:
        response = _proxy_page(FaultKind.UNAVAILABLE)
    if model.retry_after is not None:
        response.headers["Retry-After"] = str(model.retry_after)
    return response


@attrs.frozen
class _Route:
    endpoint: str
    session_id: str | None = None


@attrs.define
class EmulatorApp:
    """The emulator's request handler for a low-level ``aiohttp.web.Server``.

    Attributes:
        api_token: The only token the emulator accepts.
        store: The emulated sessions.
        observations: Counters and logs that tests read.
        fault_plan: Read once per request, so a plan swapped mid-request does not split it.
        agent_reply: The emulated agent, ``(session_id, content) -> reply``; can be replaced.
        capacity: The running capacity model, or None; replaced whole when a model is assigned.
        stopping: Set when the emulator stops; releases hanging requests.
    """

    api_token: str = attrs.field(repr=False)
    store: SessionStore
    observations: Observations
    fault_plan: FaultPlan
    agent_reply: AgentReply = default_agent_reply
    capacity: CapacityGate | None = None
    stopping: asyncio.Event = attrs.field(factory=asyncio.Event)
    _detached: set[asyncio.Task[web.StreamResponse]] = attrs.field(factory=set)
    _retired: list[CapacityGate] = attrs.field(factory=list)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request, counting it while it is in flight."""
        self.observations.request_started()
        try:
            return await self._dispatch(request)
        finally:
            self.observations.request_finished()

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        route = self._route(request)
        if isinstance(route, web.StreamResponse):
            return route
        self.observations.endpoint_request(route.endpoint)
        if route.endpoint == "inject_context" and route.session_id is not None:
            self.observations.inject_request(route.session_id)
        gate = self.capacity
        if gate is not None and gate.covers(route.endpoint):
            if not self._authorised(request):
                return error(401, "unauthorized")
            # The body is read (and kept by aiohttp) before queueing, as a proxy buffers it,
            # so a request whose client hangs up while it waits can still be applied.
            await request.read()
            # Shielded: a client that hangs up while its request waits or is served leaves the
            # server working on it; after that, hanging up cancels it as on other endpoints.
            past_gate = asyncio.Event()
            work = asyncio.ensure_future(self._through_capacity(request, route, gate, past_gate))
            self._detached.add(work)
            work.add_done_callback(self._forget)
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                if past_gate.is_set():
                    work.cancel()
                raise
        return await self._handle(request, route)

    def _forget(self, work: asyncio.Task[web.StreamResponse]) -> None:
        self._detached.discard(work)
        if not work.cancelled():
            work.exception()  # a detached request's failure (its client is gone) is not an error

    def use_capacity(self, model: CapacityModel | None) -> None:
        """Run ``model`` from now on, with a fresh state; requests already at the old gate stay."""
        if self.capacity is not None:
            self._retired.append(self.capacity)
        self.capacity = None if model is None else CapacityGate(model)

    def release(self) -> None:
        """Release hanging, waiting and served requests: the emulator is stopping."""
        self.stopping.set()
        for gate in [*self._retired, self.capacity]:
            if gate is not None:
                gate.close()

    async def cancel_detached(self) -> None:
        """Cancel what is left of requests whose client hung up (after the server closed)."""
        for work in list(self._detached):
            work.cancel()
        await asyncio.gather(*self._detached, return_exceptions=True)

    async def _through_capacity(
        self, request: web.BaseRequest, route: _Route, gate: CapacityGate, past_gate: asyncio.Event
    ) -> web.StreamResponse:
        """Wait for a slot (or be refused), hold it for the service time, then be handled."""
        try:
            admission = await self._pass_gate(gate)
        finally:
            past_gate.set()
        if admission == "refused":
            return _capacity_refusal(gate)
        if admission == "closed":
            await self._drop(request)
        return await self._handle(request, route)

    async def _pass_gate(self, gate: CapacityGate) -> Admission:
        admission = await gate.acquire()
        if admission != "admitted":
            return admission
        try:
            async with asyncio.timeout(gate.service_seconds()):
                await self.stopping.wait()
        except TimeoutError:
            return "admitted"
        finally:
            gate.release()
        return "closed"

    async def _handle(self, request: web.BaseRequest, route: _Route) -> web.StreamResponse:
        plan = self.fault_plan
        decision = plan.decide(route.session_id, route.endpoint)
        kind = decision.kind
        if decision.delay_seconds > 0:
            self.observations.fault_injected(FaultKind.LATENCY)
            await self._wait(request, decision.delay_seconds)
        if kind is FaultKind.HANG:
            self.observations.fault_injected(kind)
            await self._wait(request, None)
        if kind in _PROXY_PAGES:
            self.observations.fault_injected(kind)
            return _proxy_page(kind)
        if not self._authorised(request):
            return error(401, "unauthorized")
        if kind is FaultKind.RATE_LIMITED:
            self.observations.fault_injected(kind)
            response = error(429, "rate_limited")
            response.headers["Retry-After"] = str(plan.retry_after_seconds)
            return response
        prepared = await self._prepare(request, route)
        if isinstance(prepared, web.StreamResponse):
            return prepared
        return await self._commit(request, prepared, kind, plan)

    async def _commit(
        self, request: web.BaseRequest, commit: Commit, kind: FaultKind | None, plan: FaultPlan
    ) -> web.StreamResponse:
        """Run the commit, with the chat-engine fault ``kind`` around it."""
        if kind is FaultKind.ENGINE_ERROR:
            self.observations.fault_injected(kind)
            return _engine_error()
        if kind is FaultKind.ENGINE_REJECTED:
            self.observations.fault_injected(kind)
            return engine_rejected(request, plan.rejected_reason)
        response = commit()
        if kind is FaultKind.AMBIGUOUS_502:
            self.observations.fault_injected(kind)
            return _engine_failed_after_commit(request)
        if kind is FaultKind.AMBIGUOUS_DROP:
            self.observations.fault_injected(kind)
            await self._drop(request)
        return response

    async def _wait(self, request: web.BaseRequest, seconds: float | None) -> None:
        """Wait ``seconds`` (None: forever); if the emulator stops meanwhile, drop the request.

        Stopping must not wait for a long latency or a hang to run out.
        """
        try:
            async with asyncio.timeout(seconds):
                await self.stopping.wait()
        except TimeoutError:
            return
        await self._drop(request)

    @staticmethod
    async def _drop(request: web.BaseRequest) -> NoReturn:
        """Close the connection without answering and wait to be cancelled.

        Closing the transport makes aiohttp see the connection as lost and cancel this handler
        (the server runs with ``handler_cancellation=True``), the same path as a client that
        hangs up mid-request, so nothing is written and nothing is logged as an error.
        """
        transport = request.transport
        if transport is None:
            # The client already left: nobody will cancel this, the request simply ends. (It
            # happens to a request served after its client hung up, see CapacityModel.)
            raise asyncio.CancelledError
        transport.close()
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable: the handler is cancelled once the transport closes")

    def _authorised(self, request: web.BaseRequest) -> bool:
        given = request.headers.get("API-Token")
        if given is None:
            return False
        return secrets.compare_digest(given.encode(), self.api_token.encode())

    @staticmethod
    def _route(request: web.BaseRequest) -> _Route | web.StreamResponse:
        path = request.path
        if path in _ROUTES:
            endpoint, allowed = _ROUTES[path]
            route = _Route(endpoint)
        elif match := _SESSION_ACTION.fullmatch(path):
            route, allowed = _Route(match["action"], match["id"]), "POST"
        else:
            return error(404, "not_found")
        if request.method != allowed:
            response = error(405, "method_not_allowed")
            response.headers["Allow"] = allowed
            return response
        return route

    async def _prepare(self, request: web.BaseRequest, route: _Route) -> Prepared:
        # Read the body first: after this await, lookup, validation and commit run without
        # yielding to the loop, so no other request can change the session in between.
        raw = await request.read()
        if route.endpoint == "active_session":
            return prepare_active(self.store, request)
        session = None
        if route.session_id is not None:
            session = self.store.get_open(route.session_id)
            if session is None:
                return error(404, "session_not_found")
        body = json_object(raw)
        if body is None:
            return error(400, "invalid_json")
        return self._prepare_body(request, route.endpoint, session, body)

    def _prepare_body(
        self,
        request: web.BaseRequest,
        endpoint: str,
        session: ChatSession | None,
        body: dict[str, object],
    ) -> Prepared:
        """Hand a JSON body to its endpoint's rules (``session``: the one in the path)."""
        if endpoint == "create_session":
            return prepare_create(self.store, body)
        if endpoint == "inbound":
            return prepare_inbound(self.store, body, self.agent_reply)
        assert session is not None
        if endpoint == "support":
            return prepare_support(request, self.store, session, body, self.agent_reply)
        return prepare_inject(session, body)
