"""The session-record endpoints: create a session, look up active sessions, inject context.

Each function validates one request and returns ``Prepared`` (see ``_responses``); the commit
it returns runs later, in the same step of the event loop, with the chat-engine faults around it.
"""

from __future__ import annotations

from aiohttp import web

from osvi_async.testing._responses import (
    Prepared,
    error,
    errors,
    required_string,
    success,
)
from osvi_async.testing._state import ChatSession, SessionStore

__all__ = ["prepare_active", "prepare_create", "prepare_inject"]


def prepare_create(store: SessionStore, body: dict[str, object]) -> Prepared:
    """Validate a create-session body; the commit opens the session (closing the pair's old one)."""
    parsed = _parse_create(body)
    if isinstance(parsed, list):
        return errors(parsed)
    agent_uuid, customer_id, input_fields, context = parsed

    def commit() -> web.StreamResponse:
        session = store.create(
            agent_uuid=agent_uuid,
            customer_id=customer_id,
            input_fields=input_fields,
            context=context,
        )
        return success(session.to_json())

    return commit


def prepare_active(store: SessionStore, request: web.BaseRequest) -> Prepared:
    """Validate an active-session lookup; the commit reads the sessions.

    Without ``agent_uuid`` the answer maps agent UUIDs to sessions (``{}`` when there are
    none); with it, the answer is the one session, or 404 ``session_not_found``.
    """
    customer_id = request.query.get("customer_id", "")
    agent_uuid = request.query.get("agent_uuid")
    if not customer_id.strip():
        return errors(["customer_id is required"])
    if agent_uuid is None:
        sessions = store.active_by_agent(customer_id)
        data = {agent: session.to_json() for agent, session in sessions.items()}
        return lambda: success(data)
    session = store.active_for(customer_id, agent_uuid)
    if session is None:
        return error(404, "session_not_found")
    found = session.to_json()
    return lambda: success(found)


def prepare_inject(session: ChatSession, body: dict[str, object]) -> Prepared:
    """Validate an inject_context body; the commit appends the entry to the session's bucket."""
    context = body.get("context")
    if context is not None and not isinstance(context, str):
        return error(400, "context must be a string")
    if context is None or not context.strip():
        return error(400, "context_required")
    entry: str = context

    def commit() -> web.StreamResponse:
        session.append_context(entry)
        return success({"session_id": session.id, "context": list(session.bucket)})

    return commit


def _parse_create(
    body: dict[str, object],
) -> tuple[str, str, dict[str, object], list[str]] | list[str]:
    """Validate a create-session body: its fields, or every problem found (for a 422)."""
    problems: list[str] = []
    agent_uuid = required_string(body, "agent_uuid", problems)
    customer_id = required_string(body, "customer_id", problems)
    input_fields = body.get("input_fields")
    if input_fields is None:
        input_fields = {}
    elif not isinstance(input_fields, dict):
        problems.append("input_fields must be an object")
    context = body.get("context")
    if context is None:
        context = []
    elif not (isinstance(context, list) and all(isinstance(item, str) for item in context)):
        problems.append("context must be an array of strings")
    if problems:
        return problems
    assert isinstance(input_fields, dict)
    assert isinstance(context, list)
    return agent_uuid, customer_id, input_fields, context
