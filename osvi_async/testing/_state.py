"""In-memory chat sessions and the record of what the emulator saw.

The server rules the client depends on live here, in one place: one open session per
(customer, agent), a context bucket of the 5 most recent non-empty entries, closed sessions
that no longer accept context or messages. The observation log (entries applied, each
session's transcript, requests per session and per endpoint, connection and concurrency
counters) is what tests assert on: it is the server's view, not the client's.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final

import attrs

from osvi_async.testing._faults import FaultKind

__all__ = [
    "AGENT",
    "BUCKET_SIZE",
    "CUSTOMER",
    "OPERATOR",
    "WHISPER",
    "ChatSession",
    "EmulatorStats",
    "Observations",
    "SessionStore",
]

BUCKET_SIZE: Final = 5
"""How many context entries a session keeps; older ones are dropped first (FIFO)."""

ACCOUNT_ID: Final = 1
"""The one account every emulated session belongs to (the token is account-scoped)."""

# Transcript roles: who said a line, and so who may see it.
CUSTOMER: Final = "customer"
"""A message the customer sent (inbound)."""
AGENT: Final = "agent"
"""The agent's reply to the customer (inbound in AI mode, support ``tell``)."""
OPERATOR: Final = "operator"
"""A human operator's message to the customer (support, plain or with a command)."""
WHISPER: Final = "whisper"
"""Private operator guidance for the agent (``whisper``, and the guidance of ``tell``); never
shown to the customer."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _keep_recent(entries: Iterable[str]) -> deque[str]:
    """Return the bucket for ``entries``: non-blank strings only, the 5 most recent."""
    return deque((entry for entry in entries if entry.strip()), maxlen=BUCKET_SIZE)


@attrs.define
class ChatSession:
    """One emulated chat session, shaped like the API's ChatSession record."""

    id: str
    agent_uuid: str
    chat_agent_id: int
    customer_id: str
    input_fields: dict[str, object]
    bucket: deque[str]
    applied: list[str] = attrs.field(factory=list)
    transcript: list[tuple[str, str]] = attrs.field(factory=list)
    status: str = "active"
    mode: str = "ai"
    help_requested: bool = False
    active_human: str | None = None
    created_at: str = attrs.field(factory=_now)
    updated_at: str = attrs.field(factory=_now)

    @property
    def is_open(self) -> bool:
        """Whether the session still accepts context, messages and commands.

        A dormant session (idle for a while) is still the pair's session: it is open, and the
        next customer message resumes it.
        """
        return self.status != "closed"

    def record(self, role: str, text: str) -> None:
        """Append one line to the transcript (``role`` is CUSTOMER, AGENT, OPERATOR or WHISPER)."""
        self.transcript.append((role, text))
        self.touch()

    def append_context(self, entry: str) -> None:
        """Append one accepted entry: into the capped bucket and the uncapped applied log."""
        self.bucket.append(entry)
        self.applied.append(entry)
        self.touch()

    def touch(self) -> None:
        """Record a change, as the API's ``updated_at`` does."""
        self.updated_at = _now()

    def to_json(self) -> dict[str, object]:
        """Render the session as the API's ChatSession JSON object."""
        return {
            "id": self.id,
            "chat_agent_id": self.chat_agent_id,
            "account_id": ACCOUNT_ID,
            "customer_id": self.customer_id,
            "mode": self.mode,
            "help_requested": self.help_requested,
            "status": self.status,
            "current_state": None,
            "metadata": {
                "input_fields": dict(self.input_fields),
                "state_fields": {},
                "context": list(self.bucket),
            },
            "active_human": self.active_human,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class SessionStore:
    """Every session the emulator knows, with the one-open-session-per-pair rule."""

    def __init__(self) -> None:
        self._sessions: dict[str, ChatSession] = {}
        self._active: dict[tuple[str, str], str] = {}
        self._agent_ids: dict[str, int] = {}

    def create(
        self,
        *,
        agent_uuid: str,
        customer_id: str,
        input_fields: Mapping[str, object] | None = None,
        context: Iterable[str] = (),
    ) -> ChatSession:
        """Open a session, closing the pair's previous open session as the API does."""
        previous = self._active.get((customer_id, agent_uuid))
        if previous is not None:
            self.close(previous)
        session = ChatSession(
            id=str(uuid.uuid4()),
            agent_uuid=agent_uuid,
            chat_agent_id=self._agent_ids.setdefault(agent_uuid, len(self._agent_ids) + 1),
            customer_id=customer_id,
            input_fields=dict(input_fields or {}),
            bucket=_keep_recent(context),
        )
        self._sessions[session.id] = session
        self._active[(customer_id, agent_uuid)] = session.id
        return session

    def get(self, session_id: str) -> ChatSession | None:
        """Return the session with this id, active or closed, or None.

        Ids are UUIDs, matched without regard to case, as a uuid-typed database column does.
        """
        return self._sessions.get(session_id.lower())

    def require(self, session_id: str) -> ChatSession:
        """Return the session with this id, or raise KeyError naming it."""
        session = self.get(session_id)
        if session is None:
            raise KeyError(f"no emulated session with id {session_id!r}")
        return session

    def get_open(self, session_id: str) -> ChatSession | None:
        """Return the session if it exists and is not closed, else None."""
        session = self.get(session_id)
        return session if session is not None and session.is_open else None

    def close(self, session_id: str) -> None:
        """Close a session for good; closing a closed session is a no-op."""
        session = self.require(session_id)
        if not session.is_open:
            return
        session.status = "closed"
        session.touch()
        key = (session.customer_id, session.agent_uuid)
        if self._active.get(key) == session.id:
            del self._active[key]

    def make_dormant(self, session_id: str) -> None:
        """Mark an open session dormant (idle); it stays the pair's session until closed.

        Raises:
            KeyError: No session has this id.
            ValueError: The session is closed.
        """
        session = self.require(session_id)
        if not session.is_open:
            raise ValueError(f"session {session_id!r} is closed")
        session.status = "dormant"
        session.touch()

    def resolve(self, customer_id: str, agent_uuid: str) -> ChatSession:
        """Return the pair's open session, resumed if dormant, or a new one if there is none.

        This is how a customer message without ``session_id`` finds its session.
        """
        session = self.active_for(customer_id, agent_uuid)
        if session is None:
            return self.create(agent_uuid=agent_uuid, customer_id=customer_id)
        session.status = "active"
        return session

    def active_for(self, customer_id: str, agent_uuid: str) -> ChatSession | None:
        """Return the customer's open session with this agent (active or dormant), or None."""
        session_id = self._active.get((customer_id, agent_uuid))
        return None if session_id is None else self._sessions[session_id]

    def active_by_agent(self, customer_id: str) -> dict[str, ChatSession]:
        """Return every open session of the customer, keyed by agent UUID."""
        return {
            agent: self._sessions[session_id]
            for (customer, agent), session_id in self._active.items()
            if customer == customer_id
        }


@attrs.frozen
class EmulatorStats:
    """A snapshot of the emulator's counters, as the server saw the traffic.

    Attributes:
        requests_total: HTTP requests received, on any endpoint, with any outcome.
        in_flight: Requests being handled at the time of the snapshot.
        peak_in_flight: Most requests handled at once since start or ``reset_stats()``.
        connections_opened: TCP connections accepted since start or ``reset_stats()``.
        open_connections: TCP connections open at the time of the snapshot.
        peak_open_connections: Most connections open at once since start or ``reset_stats()``.
        faults_injected: How many times each fault kind was applied (every kind is present).
    """

    requests_total: int
    in_flight: int
    peak_in_flight: int
    connections_opened: int
    open_connections: int
    peak_open_connections: int
    faults_injected: Mapping[FaultKind, int] = attrs.field(hash=False)


class Observations:
    """Mutable counters behind ``EmulatorStats`` plus per-session and per-endpoint counts.

    The per-session and per-endpoint counts are kept since start: ``reset`` leaves them alone.
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self.open_connections = 0
        self._inject_requests: dict[str, int] = {}
        self._endpoint_requests: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Zero the totals; peaks restart from what is open or in flight right now."""
        self.requests_total = 0
        self.peak_in_flight = self.in_flight
        self.connections_opened = 0
        self.peak_open_connections = self.open_connections
        self.faults_injected = dict.fromkeys(FaultKind, 0)

    def request_started(self) -> None:
        """Count a request the server started handling."""
        self.requests_total += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def request_finished(self) -> None:
        """Count a request the server stopped handling, answered or not."""
        self.in_flight -= 1

    def connection_opened(self) -> None:
        """Count an accepted TCP connection."""
        self.connections_opened += 1
        self.open_connections += 1
        self.peak_open_connections = max(self.peak_open_connections, self.open_connections)

    def connection_closed(self) -> None:
        """Count a TCP connection that went away, from either side."""
        self.open_connections -= 1

    def fault_injected(self, kind: FaultKind) -> None:
        """Count one applied fault."""
        self.faults_injected[kind] += 1

    def inject_request(self, session_id: str) -> None:
        """Count an inject_context request naming ``session_id``, whatever its outcome."""
        key = session_id.lower()
        self._inject_requests[key] = self._inject_requests.get(key, 0) + 1

    def inject_requests_for(self, session_id: str) -> int:
        """Return the inject_context requests received for ``session_id``."""
        return self._inject_requests.get(session_id.lower(), 0)

    def endpoint_request(self, endpoint: str) -> None:
        """Count a request routed to ``endpoint``, whatever its outcome."""
        self._endpoint_requests[endpoint] = self._endpoint_requests.get(endpoint, 0) + 1

    def endpoint_requests(self, endpoint: str) -> int:
        """Return the requests routed to ``endpoint`` so far."""
        return self._endpoint_requests.get(endpoint, 0)

    def snapshot(self) -> EmulatorStats:
        """Return the counters as an immutable value."""
        return EmulatorStats(
            requests_total=self.requests_total,
            in_flight=self.in_flight,
            peak_in_flight=self.peak_in_flight,
            connections_opened=self.connections_opened,
            open_connections=self.open_connections,
            peak_open_connections=self.peak_open_connections,
            faults_injected=MappingProxyType(dict(self.faults_injected)),
        )
