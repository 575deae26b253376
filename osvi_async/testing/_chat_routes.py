"""The conversation endpoints: customer messages (inbound) and the operator channel (support).

The emulated agent is deliberately simple and predictable, so a test can state what it expects:

- Its reply is ``agent_reply(session_id, content)``, by default ``default_agent_reply``
  (``"Emulated agent reply to: <content>"``); a test author can pass any callable.
- In support mode (after ``takeover``, until ``end``) it does not answer customers: the reply
  is ``""`` and nothing is added to the transcript for the agent.
- A customer asks for a human when the message contains one of ``HELP_WORDS`` as a word (any
  case, plural too); from then on the session's ``help_requested`` stays true.

Support rules, as the API states them: a plain operator message (no command) is accepted only in
support mode, and ``tell`` is refused during a takeover; both refusals come from the chat engine,
so they are 502s carrying the engine's ``rejected`` body. Transcript roles: the customer's
message ``customer``, the agent's reply ``agent``, an operator's text to the customer
``operator`` (plain messages, and the optional message of ``takeover``, ``end`` and ``close``),
private guidance ``whisper`` (``whisper``, and the guidance ``tell`` gives before its agent turn).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from aiohttp import web

from osvi_async.testing._responses import (
    Prepared,
    engine_rejected,
    error,
    errors,
    optional_string,
    required_string,
    success,
)
from osvi_async.testing._state import (
    AGENT,
    CUSTOMER,
    OPERATOR,
    WHISPER,
    ChatSession,
    SessionStore,
)

__all__ = [
    "HELP_WORDS",
    "OPERATOR_EMAIL",
    "SUPPORT_COMMANDS",
    "AgentReply",
    "asks_for_human",
    "default_agent_reply",
    "prepare_inbound",
    "prepare_support",
]

AgentReply = Callable[[str, str], str]
"""The emulated agent: ``(session_id, content) -> reply text``."""

SUPPORT_COMMANDS: Final = ("takeover", "tell", "whisper", "end", "close")
"""The operator commands the support endpoint accepts."""

HELP_WORDS: Final = ("human", "person", "operator", "agent", "representative")
"""Words that, in a customer message, ask for a human."""

OPERATOR_EMAIL: Final = "operator@emulator.invalid"
"""The operator a ``takeover`` puts in ``active_human``."""

CONVERSATION_STATE: Final = "default"
"""The conversation state every turn reports (single-prompt agents, as the docs' example)."""

_HELP_PATTERN: Final = re.compile(r"\b(?:" + "|".join(HELP_WORDS) + r")s?\b", flags=re.IGNORECASE)


def default_agent_reply(session_id: str, content: str) -> str:
    """The emulated agent's reply unless a test gives its own: ``Emulated agent reply to: ...``."""
    return f"Emulated agent reply to: {content}"


def asks_for_human(content: str) -> bool:
    """Whether a customer message asks for a human (contains one of ``HELP_WORDS``)."""
    return _HELP_PATTERN.search(content) is not None


def _agent_turn(session: ChatSession, content: str, agent_reply: AgentReply) -> str:
    """Run one agent turn on ``content`` and record the reply; "" (no turn) in support mode."""
    if session.mode == "support":
        return ""
    reply = agent_reply(session.id, content)
    if reply:
        session.record(AGENT, reply)
    return reply


def prepare_inbound(
    store: SessionStore, body: dict[str, object], agent_reply: AgentReply
) -> Prepared:
    """Validate a customer message; the commit records it and the agent's reply.

    Without ``session_id`` the commit uses the pair's open session, resumed if dormant, or
    opens one. An explicit ``session_id`` must name an open session (else 404
    ``session_not_found``); it is used as given, even if it belongs to another pair.
    """
    problems: list[str] = []
    agent_uuid = required_string(body, "agent_uuid", problems)
    customer_id = required_string(body, "customer_id", problems)
    content = required_string(body, "content", problems)
    session_id = optional_string(body, "session_id", problems)
    if problems:
        return errors(problems)
    explicit = None if session_id is None else store.get_open(session_id)
    if session_id is not None and explicit is None:
        return error(404, "session_not_found")

    def commit() -> web.StreamResponse:
        if explicit is not None:
            session = explicit
            session.status = "active"
        else:
            session = store.resolve(customer_id, agent_uuid)
        session.record(CUSTOMER, content)
        if asks_for_human(content):
            session.help_requested = True
        reply = _agent_turn(session, content, agent_reply)
        return success(
            {
                "session_id": session.id,
                "reply": reply,
                "state": CONVERSATION_STATE,
                "mode": session.mode,
                "help_requested": session.help_requested,
            }
        )

    return commit


def prepare_support(
    request: web.BaseRequest,
    store: SessionStore,
    session: ChatSession,
    body: dict[str, object],
    agent_reply: AgentReply,
) -> Prepared:
    """Validate a support body; the commit applies the command (or the engine's refusal)."""
    problems = _support_errors(body)
    if problems:
        return errors(problems)
    command = body.get("command")
    given = body.get("message")
    assert command is None or isinstance(command, str)
    assert given is None or isinstance(given, str)
    message = given if given and given.strip() else None  # a blank extra says nothing
    # The engine's own refusals. They are commits that change nothing, so the plan's
    # engine faults (engine unreachable, say) still come first, as they would for real.
    if command == "tell" and session.mode == "support":
        return lambda: engine_rejected(request, "tell_not_allowed_during_takeover")
    if command is None and session.mode != "support":
        return lambda: engine_rejected(request, "plain_message_requires_support_mode")

    def commit() -> web.StreamResponse:
        data: dict[str, object] = {"state": "ok", "session_id": session.id, "command": command}
        if command == "tell":
            assert message is not None
            session.record(WHISPER, message)
            data["reply"] = _agent_turn(session, message, agent_reply)
        elif command == "whisper":
            if message is not None:
                session.record(WHISPER, message)
        elif message is not None:
            session.record(OPERATOR, message)
        if command == "takeover":
            session.mode, session.active_human = "support", OPERATOR_EMAIL
            data["active_human"] = OPERATOR_EMAIL
        elif command == "end":
            session.mode, session.active_human = "ai", None
        elif command == "close":
            store.close(session.id)
        session.touch()
        return success(data)

    return commit


def _support_errors(body: dict[str, object]) -> list[str]:
    """Validate a support body (SupportRequest in the spec); every problem found, for a 422."""
    problems: list[str] = []
    command = body.get("command")
    message = body.get("message")
    if command is not None and command not in SUPPORT_COMMANDS:
        problems.append(f"command must be one of: {', '.join(SUPPORT_COMMANDS)}")
    if message is not None and not isinstance(message, str):
        problems.append("message must be a string")
    elif command in (None, "tell") and (message is None or not message.strip()):
        problems.append("message is required")
    return problems
