"""Request handling for the emulator: routing, auth, validation, faults, in the API's order.

The order of checks is part of what the emulator promises, because a client's error handling
depends on which answer wins when several apply:

1. Route: unknown path -> 404 ``not_found``; known path, wrong method -> 405.
2. Fault decision (only requests the ``FaultPlan`` covers), then latency.
3. Reverse-proxy faults (HTML 502/503/504, hang): they happen before the app sees the request.
4. Auth: ``API-Token`` missing or wrong -> 401 ``unauthorized``.
5. Rate limit fault -> 429 with ``Retry-After``.
6. Session lookup (unknown or closed -> 404 ``session_not_found``), then body validation
   (400 for inject_context, 422 ``errors`` for create-session and support).
7. Chat-engine faults: ``engine_error``/``engine_rejected`` answer 502 without applying;
   ``ambiguous_502``/``ambiguous_drop`` apply the change and then fail.

Steps 6 and 7 run without awaiting in between, so a change is never applied to a session that
another request closed meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Callable
from typing import Final, NoReturn

import attrs
from aiohttp import web

from osvi_async.testing._faults import FaultDecision, FaultKind, FaultPlan
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
_OPERATOR: Final = "operator@emulator.invalid"
SUPPORT_COMMANDS: Final = ("takeover", "tell", "whisper", "end", "close")
"""The operator commands the support endpoint accepts."""

Commit = Callable[[], web.StreamResponse]
"""Applies a validated request to the state and returns its success answer."""

Prepared = web.StreamResponse | Commit
"""A validation failure to send as is, or the commit that a valid request would run."""


def _error(status: int, error: str) -> web.Response:
    return web.json_response({"success": False, "error": error}, status=status)


def _success(data: object) -> web.Response:
    return web.json_response({"success": True, "data": data})


def _engine_error() -> web.Response:
    body = {"success": False, "error": "Python engine unreachable", "upstream_body": None}
    return web.json_response(body, status=502)


def _engine_failed_after_commit(request: web.BaseRequest) -> web.Response:
    """The engine took the entry, then failed: a 5xx relayed as a 502 (the ambiguous case).

    Unlike ``Python engine unreachable`` (nothing reached the engine), this says the engine
    answered, so a client cannot know whether the entry was applied.
    """
    body = {
        "success": False,
        "error": f"Python engine returned 500 for {request.method} {request.path}",
        "upstream_body": None,
    }
    return web.json_response(body, status=502)


def _engine_rejected(request: web.BaseRequest, reason: str) -> web.Response:
    body = {
        "success": False,
        "error": f"Python engine returned 422 for {request.method} {request.path}",
        "upstream_body": {"state": "rejected", "reason": reason},
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
        stopping: Set when the emulator stops; releases hanging requests.
    """

    api_token: str = attrs.field(repr=False)
    store: SessionStore
    observations: Observations
    fault_plan: FaultPlan
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
        if route.endpoint == "inject_context" and route.session_id is not None:
            self.observations.inject_request(route.session_id)
        plan = self.fault_plan
        covered = plan.all_endpoints or route.endpoint == "inject_context"
        decision = plan.decide(route.session_id) if covered else FaultDecision()
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
            return _error(401, "unauthorized")
        if kind is FaultKind.RATE_LIMITED:
            self.observations.fault_injected(kind)
            response = _error(429, "rate_limited")
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
            return _engine_rejected(request, plan.rejected_reason)
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
        if path == "/v1/chat/session":
            route, allowed = _Route("create_session"), "POST"
        elif path == "/v1/chat/session/active":
            route, allowed = _Route("active_session"), "GET"
        elif match := _SESSION_ACTION.fullmatch(path):
            route, allowed = _Route(match["action"], match["id"]), "POST"
        else:
            return _error(404, "not_found")
        if request.method != allowed:
            response = _error(405, "method_not_allowed")
            response.headers["Allow"] = allowed
            return response
        return route

    async def _prepare(self, request: web.BaseRequest, route: _Route) -> Prepared:
        # Read the body first: after this await, lookup, validation and commit run without
        # yielding to the loop, so no other request can change the session in between.
        raw = await request.read()
        if route.session_id is None:
            if route.endpoint == "active_session":
                return self._prepare_active(request)
            return self._prepare_create(raw)
        session = self.store.get_active(route.session_id)
        if session is None:
            return _error(404, "session_not_found")
        body = _json_object(raw)
        if body is None:
            return _error(400, "invalid_json")
        prepare = self._prepare_support if route.endpoint == "support" else _prepare_inject
        return prepare(request, session, body)

    def _prepare_create(self, raw: bytes) -> Prepared:
        body = _json_object(raw)
        if body is None:
            return _error(400, "invalid_json")
        parsed = _parse_create(body)
        if isinstance(parsed, list):
            return _errors(parsed)
        agent_uuid, customer_id, input_fields, context = parsed

        def commit() -> web.StreamResponse:
            session = self.store.create(
                agent_uuid=agent_uuid,
                customer_id=customer_id,
                input_fields=input_fields,
                context=context,
            )
            return _success(session.to_json())

        return commit

    def _prepare_active(self, request: web.BaseRequest) -> Prepared:
        customer_id = request.query.get("customer_id", "")
        agent_uuid = request.query.get("agent_uuid")
        if not customer_id.strip():
            return _errors(["customer_id is required"])
        if agent_uuid is None:
            sessions = self.store.active_by_agent(customer_id)
            data = {agent: session.to_json() for agent, session in sessions.items()}
            return lambda: _success(data)
        session = self.store.active_for(customer_id, agent_uuid)
        if session is None:
            return _error(404, "session_not_found")
        found = session.to_json()
        return lambda: _success(found)

    def _prepare_support(
        self, request: web.BaseRequest, session: ChatSession, body: dict[str, object]
    ) -> Prepared:
        errors = _support_errors(body)
        if errors:
            return _errors(errors)
        command = body.get("command")
        session_id = session.id
        # The engine's own refusals: not faults, the documented behaviour of a takeover.
        if command == "tell" and session.mode == "support":
            return _engine_rejected(request, "tell_not_allowed_during_takeover")
        if command is None and session.mode != "support":
            return _engine_rejected(request, "message_requires_takeover")

        def commit() -> web.StreamResponse:
            data: dict[str, object] = {"state": "ok", "session_id": session_id, "command": command}
            if command == "takeover":
                session.mode, session.active_human = "support", _OPERATOR
                data["active_human"] = _OPERATOR
            elif command == "end":
                session.mode, session.active_human = "ai", None
            elif command == "tell":
                data["reply"] = "Emulated agent reply."
            elif command == "close":
                self.store.close(session_id)
            session.touch()
            return _success(data)

        return commit


def _prepare_inject(
    request: web.BaseRequest, session: ChatSession, body: dict[str, object]
) -> Prepared:
    """Validate an inject_context body; the commit appends the entry to the session's bucket."""
    context = body.get("context")
    if context is not None and not isinstance(context, str):
        return _error(400, "context must be a string")
    if context is None or not context.strip():
        return _error(400, "context_required")
    entry: str = context

    def commit() -> web.StreamResponse:
        session.append_context(entry)
        return _success({"session_id": session.id, "context": list(session.bucket)})

    return commit


def _errors(errors: list[str]) -> web.Response:
    return web.json_response({"success": False, "errors": errors}, status=422)


def _json_object(raw: bytes) -> dict[str, object] | None:
    """Parse a request body that must be a JSON object; None when it is anything else."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _required_string(body: dict[str, object], name: str, errors: list[str]) -> str:
    value = body.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        errors.append(f"{name} is required")
    elif not isinstance(value, str):
        errors.append(f"{name} must be a string")
    else:
        return value
    return ""


def _parse_create(
    body: dict[str, object],
) -> tuple[str, str, dict[str, object], list[str]] | list[str]:
    """Validate a create-session body: its fields, or every problem found (for a 422)."""
    errors: list[str] = []
    agent_uuid = _required_string(body, "agent_uuid", errors)
    customer_id = _required_string(body, "customer_id", errors)
    input_fields = body.get("input_fields")
    if input_fields is None:
        input_fields = {}
    elif not isinstance(input_fields, dict):
        errors.append("input_fields must be an object")
    context = body.get("context")
    if context is None:
        context = []
    elif not (isinstance(context, list) and all(isinstance(item, str) for item in context)):
        errors.append("context must be an array of strings")
    if errors:
        return errors
    assert isinstance(input_fields, dict)
    assert isinstance(context, list)
    return agent_uuid, customer_id, input_fields, context


def _support_errors(body: dict[str, object]) -> list[str]:
    """Validate a support body (SupportRequest in the spec); every problem found, for a 422."""
    errors: list[str] = []
    command = body.get("command")
    message = body.get("message")
    if command is not None and command not in SUPPORT_COMMANDS:
        errors.append(f"command must be one of: {', '.join(SUPPORT_COMMANDS)}")
    if message is not None and not isinstance(message, str):
        errors.append("message must be a string")
    elif message is None and command in (None, "tell"):
        errors.append("message is required")
    return errors
