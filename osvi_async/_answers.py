"""Build the Chat v1 models from the `data` of a success answer.

Lenient where the API may vary without meaning anything else (unknown keys are ignored, ids
are any string or number, a timestamp without an offset is UTC), strict where a wrong shape
means we would hand back something false: a missing required key, or a value of the wrong
type, is a `ResponseDecodeError` that names its JSON path.

A body that may spell the API token (a server echoing request headers into a reply, say) has
every string in it redacted before anything is built from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from osvi_async._decode import (
    Scrubber,
    check_answered_session,
    decode_data,
    escape_controls,
    shape_error,
)
from osvi_async.models import ChatSession, MessageReply, SessionMetadata, SupportResult

_MISSING: Final = object()


class _Fields:
    """Reads one JSON object of an answer, naming `$.<path>.<key>` in every complaint."""

    __slots__ = ("_body", "_data", "_operation", "_path", "_scrubber", "_status")

    def __init__(
        self,
        data: object,
        path: str,
        *,
        status: int,
        body: bytes,
        scrubber: Scrubber,
        operation: str,
    ) -> None:
        self._status = status
        self._body = body
        self._scrubber = scrubber
        self._operation = operation
        self._path = path
        if not isinstance(data, dict):
            raise self._error(f"expected an object at {path}")
        self._data: dict[str, Any] = data

    def _error(self, problem: str) -> Exception:
        return shape_error(self._status, self._body, problem, self._scrubber, self._operation)

    def _get(self, key: str, *, required: bool) -> Any:
        value = self._data.get(key, _MISSING)
        if value is _MISSING:
            if required:
                raise self._error(f"missing required key {self._path}.{key}")
            return None
        return value

    def text(self, key: str) -> str:
        """A required string."""
        value = self._get(key, required=True)
        if not isinstance(value, str):
            raise self._error(f"expected a string at {self._path}.{key}")
        return value

    def identifier(self, key: str) -> str:
        """A required id: any string, or a number taken as its decimal string."""
        value = self._get(key, required=True)
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self._error(f"expected a string id at {self._path}.{key}")
        return str(value)

    def number_or_text(self, key: str) -> int | str | None:
        """An optional internal id, kept as the API sent it (a number or a string)."""
        value = self._get(key, required=False)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | str)):
            raise self._error(f"expected a number or string at {self._path}.{key}")
        return value

    def optional_text(self, key: str, *, required: bool = False) -> str | None:
        """A string or null (or, unless `required`, absent)."""
        value = self._get(key, required=required)
        if value is not None and not isinstance(value, str):
            raise self._error(f"expected a string or null at {self._path}.{key}")
        return value

    def flag(self, key: str) -> bool:
        """An optional boolean; absent or null is False."""
        value = self._get(key, required=False)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self._error(f"expected true or false at {self._path}.{key}")
        return value

    def timestamp(self, key: str) -> datetime | None:
        """An optional ISO 8601 date-time, made timezone-aware (UTC when it has no offset)."""
        value = self._get(key, required=False)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                pass
            else:
                return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        raise self._error(f"expected an ISO 8601 date-time at {self._path}.{key}")

    def mapping(self, key: str) -> Mapping[str, Any]:
        """An optional object, as a read-only mapping; absent or null is empty."""
        value = self._get(key, required=False)
        if value is None:
            return MappingProxyType({})
        if not isinstance(value, dict):
            raise self._error(f"expected an object at {self._path}.{key}")
        return MappingProxyType(value)

    def strings(self, key: str) -> tuple[str, ...]:
        """An optional list of strings, as a tuple; absent or null is empty."""
        value = self._get(key, required=False)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._error(f"expected a list of strings at {self._path}.{key}")
        return tuple(value)

    def is_one_session(self) -> bool:
        """Whether this object is one session record (an `id` string) rather than a map."""
        return isinstance(self._data.get("id"), str | int)

    def agent_keys(self) -> list[str]:
        """The object's keys, in the order the API sent them."""
        return list(self._data)

    def child(self, key: str) -> _Fields | None:
        """An optional nested object, read the same way; None when absent or null."""
        value = self._get(key, required=False)
        if value is None:
            return None
        return _Fields(
            value,
            f"{self._path}.{key}",
            status=self._status,
            body=self._body,
            scrubber=self._scrubber,
            operation=self._operation,
        )


def _data_fields(status: int, body: bytes, scrubber: Scrubber, operation: str) -> _Fields:
    data = decode_data(status, body, scrubber, operation)
    if scrubber.may_hold_secret(body):
        data = scrubber.value(data)
    return _Fields(data, "$.data", status=status, body=body, scrubber=scrubber, operation=operation)


def _session(fields: _Fields) -> ChatSession:
    metadata = fields.child("metadata")
    return ChatSession(
        id=fields.identifier("id"),
        customer_id=fields.optional_text("customer_id"),
        chat_agent_id=fields.number_or_text("chat_agent_id"),
        account_id=fields.number_or_text("account_id"),
        mode=fields.optional_text("mode"),
        help_requested=fields.flag("help_requested"),
        status=fields.optional_text("status"),
        current_state=fields.optional_text("current_state"),
        metadata=SessionMetadata()
        if metadata is None
        else SessionMetadata(
            input_fields=metadata.mapping("input_fields"),
            state_fields=metadata.mapping("state_fields"),
            context=metadata.strings("context"),
        ),
        active_human=fields.optional_text("active_human"),
        created_at=fields.timestamp("created_at"),
        updated_at=fields.timestamp("updated_at"),
    )


def decode_chat_session(
    status: int, body: bytes, *, session_id: str, attempts: int, scrubber: Scrubber
) -> ChatSession:
    """`data` as one `ChatSession` (create_session, get_active_session)."""
    return _session(_data_fields(status, body, scrubber, "chat session"))


def decode_active_sessions(
    status: int, body: bytes, *, session_id: str, attempts: int, scrubber: Scrubber
) -> Mapping[str, ChatSession]:
    """`data` as `{agent_uuid: ChatSession}` (get_active_sessions); read-only."""
    fields = _data_fields(status, body, scrubber, "get_active_sessions")
    if fields.is_one_session():
        # The spec's oneOf allows it, and a mock (Prism) answers so; the real API keys by
        # agent here. One session without its agent's uuid cannot be put in the mapping.
        raise shape_error(
            status,
            body,
            "expected an object keyed by agent uuid at $.data, got a single session "
            "(look it up with get_active_session(customer_id, agent_uuid) instead)",
            scrubber,
            "get_active_sessions",
        )
    sessions: dict[str, ChatSession] = {}
    for agent_uuid in fields.agent_keys():
        child = fields.child(agent_uuid)
        if child is None:
            continue  # null for an agent: no active session with it
        sessions[agent_uuid] = _session(child)
    return MappingProxyType(sessions)


def decode_message_reply(
    status: int, body: bytes, *, session_id: str, attempts: int, scrubber: Scrubber
) -> MessageReply:
    """`data` as a `MessageReply` (send_message); when the request named a session, the
    answer must be for it."""
    operation = "send_message"
    fields = _data_fields(status, body, scrubber, operation)
    answered = fields.identifier("session_id")
    if session_id:  # the caller named the session: the answer must be for it
        answered = check_answered_session(
            status, body, answered, session_id=session_id, scrubber=scrubber, operation=operation
        )
    return MessageReply(
        session_id=answered,
        reply=fields.text("reply"),
        state=fields.optional_text("state"),
        mode=fields.optional_text("mode"),
        help_requested=fields.flag("help_requested"),
    )


def decode_support_result(
    status: int,
    body: bytes,
    *,
    session_id: str,
    attempts: int,
    scrubber: Scrubber,
    command: str | None = None,
) -> SupportResult:
    """`data` as a `SupportResult` (support); it must name the session the request was for
    and, when both say one, the command (another command answers some other request)."""
    operation = "support"
    fields = _data_fields(status, body, scrubber, operation)
    answered = check_answered_session(
        status,
        body,
        fields.identifier("session_id"),
        session_id=session_id,
        scrubber=scrubber,
        operation=operation,
    )
    answered_command = fields.optional_text("command", required=True)
    if command is not None and answered_command is not None and answered_command != command:
        shown = escape_controls(answered_command[:60])
        problem = f"$.data.command is {shown!r}, not the {command!r} this request sent"
        raise shape_error(status, body, problem, scrubber, operation)
    return SupportResult(
        session_id=answered,
        state=fields.text("state"),
        command=answered_command,
        reply=fields.optional_text("reply"),
        active_human=fields.optional_text("active_human"),
    )
