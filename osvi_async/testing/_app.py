"""Request handling for the emulator: routing, auth, validation, faults, in the API's order.

The order of checks is part of what the emulator promises, because a client's error handling
depends on which answer wins when several apply:

1. Route: unknown path -> 404 ``not_found``; known path, wrong method -> 405. A routed request
   is counted for its endpoint (``OsviEmulator.requests``) whatever happens next.
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
        stopping: Set when the emulator stops; releases hanging requests.
    """

    api_token: str = attrs.field(repr=False)
    store: SessionStore
    observations: Observations
    fault_plan: FaultPlan
    agent_reply: AgentReply = default_agent_reply
    stopping: asyncio.Event = attrs.field(factory=asyncio.Event)

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
        if transport is not None:
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
