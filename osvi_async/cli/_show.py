"""How the session, message and support commands show their results: lines for a person, or
one JSON object for a script (`--json`).

The JSON keys are the SDK models' attribute names, so a script reads the same names in
Python and in the shell; timestamps are ISO 8601 with their offset, absent values `null`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from osvi_async import ChatSession, MessageReply, SupportResult


def dumps(value: object) -> str:
    """One line of JSON; anything json cannot encode (an odd metadata value) as its str()."""
    return json.dumps(value, ensure_ascii=False, default=str)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def session_json(session: ChatSession) -> dict[str, Any]:
    """A session as a JSON object, every model attribute included."""
    metadata = session.metadata
    return {
        "id": session.id,
        "customer_id": session.customer_id,
        "chat_agent_id": session.chat_agent_id,
        "account_id": session.account_id,
        "mode": session.mode,
        "help_requested": session.help_requested,
        "status": session.status,
        "current_state": session.current_state,
        "active_human": session.active_human,
        "metadata": {
            "input_fields": dict(metadata.input_fields),
            "state_fields": dict(metadata.state_fields),
            "context": list(metadata.context),
        },
        "created_at": _time(session.created_at),
        "updated_at": _time(session.updated_at),
    }


def _line(label: str, value: object) -> str:
    return f"{label + ':':<13}{value}"


def _fields(label: str, fields: Mapping[str, Any]) -> Iterator[str]:
    for key, value in fields.items():
        shown = value if isinstance(value, str) else dumps(value)
        yield _line(label, f"{key} = {shown}")


def session_lines(session: ChatSession, *, agent_uuid: str | None = None) -> Iterator[str]:
    """A session for a person: one `name: value` line per fact that is known."""
    yield _line("session", session.id)
    if agent_uuid is not None:
        yield _line("agent", agent_uuid)
    if session.customer_id is not None:
        yield _line("customer", session.customer_id)
    mode = f" (mode {session.mode})" if session.mode else ""
    yield _line("status", f"{session.status or 'unknown'}{mode}")
    if session.current_state is not None:
        yield _line("state", session.current_state)
    if session.help_requested:
        yield _line("help", "the customer asked for a human")
    if session.active_human is not None:
        yield _line("operator", session.active_human)
    if session.created_at is not None:
        yield _line("created", _time(session.created_at))
    if session.updated_at is not None:
        yield _line("updated", _time(session.updated_at))
    yield from _fields("input field", session.metadata.input_fields)
    yield from _fields("state field", session.metadata.state_fields)
    for number, entry in enumerate(session.metadata.context, start=1):
        yield _line("context", f"{number}. {entry}")


def reply_json(reply: MessageReply) -> dict[str, Any]:
    """A message reply as a JSON object."""
    return {
        "session_id": reply.session_id,
        "reply": reply.reply,
        "state": reply.state,
        "mode": reply.mode,
        "help_requested": reply.help_requested,
    }


def reply_lines(reply: MessageReply) -> Iterator[str]:
    """The agent's reply first (what a person wants to read), then the session it went to."""
    if reply.reply:
        yield reply.reply
    else:
        yield "(no agent reply: the session is in support mode)"
    facts = [f"session {reply.session_id}"]
    if reply.mode:
        facts.append(f"mode {reply.mode}")
    if reply.state:
        facts.append(f"state {reply.state}")
    if reply.help_requested:
        facts.append("the customer asked for a human")
    yield f"({', '.join(facts)})"


def support_json(result: SupportResult) -> dict[str, Any]:
    """A support command's result as a JSON object."""
    return {
        "session_id": result.session_id,
        "command": result.command,
        "state": result.state,
        "reply": result.reply,
        "active_human": result.active_human,
        "possible_duplicate": result.possible_duplicate,
    }


def support_lines(result: SupportResult) -> Iterator[str]:
    """What the command did, the operator now in charge and any reply, one per line."""
    yield f"{result.command or 'message'}: {result.state} (session {result.session_id})"
    if result.active_human is not None:
        yield f"operator: {result.active_human}"
    if result.reply:
        yield f"reply: {result.reply}"
    if result.possible_duplicate:
        yield "warning: a retried attempt: the earlier one may have been applied too"
