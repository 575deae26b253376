"""The values the API answers with, as frozen attrs classes.

They are built in one place, `osvi_async._decode`, from the JSON the API sends; sequences are
tuples so that a result can be shared, hashed and kept without defensive copies.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal

import attrs

from osvi_async.errors import OsviError

__all__ = [
    "BulkSummary",
    "ChatSession",
    "CustomerInjectRequest",
    "InjectContextResult",
    "InjectOutcome",
    "InjectRequest",
    "MessageReply",
    "SessionMetadata",
    "SupportCommand",
    "SupportResult",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})

SupportCommand = Literal["takeover", "tell", "whisper", "end", "close"]
"""The operator commands `OsviClient.support` sends (None: a plain operator message)."""


@attrs.frozen(slots=True, kw_only=True)
class SessionMetadata:
    """The free-form parts of a session (`ChatSession.metadata`).

    The mappings are read-only at the top level; values nested in them are as decoded.

    Attributes:
        input_fields: Facts about the customer given when the session was created
            (read-only mapping).
        state_fields: Values the agent collected during the conversation (read-only mapping).
        context: The session's context bucket, oldest first (at most 5 entries, FIFO).
    """

    input_fields: Mapping[str, Any] = attrs.field(default=_EMPTY, hash=False)
    state_fields: Mapping[str, Any] = attrs.field(default=_EMPTY, hash=False)
    context: tuple[str, ...] = ()


@attrs.frozen(slots=True, kw_only=True)
class ChatSession:
    """A chat session between one customer and one agent, as the API describes it.

    Returned by `create_session`, `get_active_session` and `get_active_sessions`. Only `id` is
    required of the API's answer; a field it leaves out is None (or False, or empty).

    Attributes:
        id: The session id: the path key for `support` and `inject_context`. Kept as the API
            sent it (a UUID from the real API).
        customer_id: The caller's identifier for the customer.
        chat_agent_id: The agent's internal id (a number from the real API).
        account_id: The owning account's internal id.
        mode: "ai" (the agent answers by itself) or "support" (a human operator took over).
        help_requested: True once the customer asked for a human or the agent escalated.
        status: "active", "dormant" (idle for a while) or "closed".
        current_state: The conversation state of a multi-prompt agent, or None.
        metadata: Input fields, state fields and the context bucket.
        active_human: The operator holding the session, or None.
        created_at: When the session was opened (timezone-aware; UTC when the API gave no
            offset).
        updated_at: When it last changed (timezone-aware).
    """

    id: str
    customer_id: str | None = None
    chat_agent_id: int | str | None = None
    account_id: int | str | None = None
    mode: str | None = None
    help_requested: bool = False
    status: str | None = None
    current_state: str | None = None
    metadata: SessionMetadata = SessionMetadata()
    active_human: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@attrs.frozen(slots=True, kw_only=True)
class MessageReply:
    """What `send_message` returns: the agent's answer to the customer's message.

    Attributes:
        session_id: The session the message went to (created or resumed if needed).
        reply: The agent's reply; empty when the agent did not answer (in support mode a
            human answers instead).
        state: The conversation state after the turn.
        mode: "ai" or "support".
        help_requested: True when the customer asked for a human (or the agent escalated).
        possible_duplicate: True when the message was sent again after an attempt that may
            have delivered it (only with `RetryPolicy(retry_ambiguous=True)`): the customer
            may have seen the exchange twice.
    """

    session_id: str
    reply: str
    state: str | None = None
    mode: str | None = None
    help_requested: bool = False
    possible_duplicate: bool = False


@attrs.frozen(slots=True, kw_only=True)
class SupportResult:
    """What `support` returns once the API accepted an operator command or message.

    Attributes:
        session_id: The session the command was for.
        state: The API's outcome marker ("ok").
        command: The command applied, or None for a plain operator message.
        reply: The agent's reply, for `tell`.
        active_human: The operator now holding the session, for `takeover`.
        possible_duplicate: True when a `whisper` (or, with `retry_ambiguous=True`, any
            message-carrying command) was sent again after an attempt that may have applied
            it: it may be there twice.
    """

    session_id: str
    state: str
    command: str | None
    reply: str | None = None
    active_human: str | None = None
    possible_duplicate: bool = False


@attrs.frozen(slots=True)
class InjectContextResult:
    """What `OsviClient.inject_context` returns once the API has accepted the entry.

    Attributes:
        session_id: The chat session the entry was appended to.
        context: The session's context bucket after the append, oldest first. The API keeps
            only the 5 most recent entries, so an older entry may have dropped out of it.
        attempts: How many HTTP attempts the call took (1 when the first one succeeded).
        possible_duplicate: True when the entry may have been applied more than once: an
            earlier attempt (or, for a resend, an earlier call or run) may have applied it,
            and nothing rules a second copy out. Always True after an attempt that may still
            apply later (timed out or lost its connection after sending, a 504, a proxy's
            5xx page) and on a resend; after attempts that all settled (a JSON 502 relaying
            the engine's failure), True unless the bucket is not full and holds the entry
            exactly once. A hint, not a proof: it errs towards True. False on every clean
            result.
    """

    session_id: str
    context: tuple[str, ...]
    attempts: int = 1
    possible_duplicate: bool = False


@attrs.frozen(slots=True)
class InjectRequest:
    """One entry for `OsviClient.inject_many`: append `context` to session `session_id`.

    A plain `(session_id, context)` tuple is accepted wherever a request is.

    Attributes:
        session_id: The chat session UUID.
        context: The text to append.
        may_have_been_applied: Set when this is a resend of an entry whose earlier send may
            have been applied (an earlier run was stopped or killed while it was in flight, or
            it failed with `error.may_have_been_applied`). The send is then treated like a
            retry after an ambiguous attempt that may still apply: its result is always
            flagged `possible_duplicate`, and a failure says `may_have_been_applied`.
    """

    session_id: str
    context: str
    may_have_been_applied: bool = False


@attrs.frozen(slots=True)
class CustomerInjectRequest:
    """One entry for `OsviClient.inject_many`, addressed by customer and agent.

    The run resolves the customer's active session with that agent (through the client's
    session cache) right before sending, and keeps the input order of the entries of each
    (customer_id, agent_uuid) pair, as it does for a session.

    Attributes:
        customer_id: The caller's identifier for the customer.
        agent_uuid: The agent whose active session with the customer gets the entry.
        context: The text to append.
        may_have_been_applied: As for `InjectRequest`: set on a resend.
    """

    customer_id: str
    agent_uuid: str
    context: str
    may_have_been_applied: bool = False


@attrs.frozen(slots=True)
class InjectOutcome:
    """How one item of a bulk run ended. Every item given to `inject_many` gets exactly one.

    Attributes:
        index: The item's position in the input, from 0.
        request: The item as an `InjectRequest` (or the `CustomerInjectRequest` it was), or
            None if the input held something that is not a request or a
            `(session_id, context)` pair (`error` says what).
        ok: True when the entry was accepted.
        result: The API's answer when `ok`, else None.
        error: Why the item failed when not `ok`, else None: the call's error, a
            `ClientValidationError` for an invalid item (never sent), an `ItemHeldError` for
            an item held back because an earlier item of its session failed (never sent), or,
            in `BulkRun.leftovers` only, a `RunStoppedError`.
    """

    index: int
    request: InjectRequest | CustomerInjectRequest | None
    ok: bool
    result: InjectContextResult | None = None
    error: OsviError | None = None

    @property
    def attempts(self) -> int:
        """HTTP attempts made for this item (0 if it was never sent)."""
        if self.result is not None:
            return self.result.attempts
        return self.error.attempts if self.error is not None else 0


@attrs.frozen(kw_only=True)
class BulkSummary:
    """Counts for a bulk run, so far or at its end (`BulkRun.summary`).

    Every item pulled from the input is counted exactly once:
    `items == succeeded + failed + held + not_sent + interrupted`.

    Attributes:
        items: Items pulled from the input so far.
        succeeded: Items the API accepted.
        failed: Items that ended with an error (including invalid ones), not counting held
            or stopped items.
        invalid: Of the failed, those refused before sending (bad session id or context).
        retries: Extra HTTP attempts made, across all items.
        retries_refused: Retries the policy wanted but the run's retry budget refused.
        possible_duplicates: Of the succeeded, those flagged `possible_duplicate`.
        not_sent: Items the run was stopped (closed, cancelled or drained) before it could
            apply them: queued, or waiting for the circuit or a backoff after attempts that
            certainly did not apply them. `RunStoppedError(request_sent=False)`.
        interrupted: Items stopped with an attempt on the wire, or after one that may have
            applied them. `RunStoppedError(request_sent=True)`.
        elapsed: Seconds since the run started (until it stopped).
        held: Items not sent because an earlier item of their session failed in a way a
            later attempt could fix (`ItemHeldError`); certainly not applied by this run.
        concurrency_limit: Attempts allowed in flight: with `concurrency="auto"`, the
            adaptive limit at the time of the summary (at the end, the one it settled on);
            otherwise the fixed `concurrency`. 0 when not known (a summary built by hand).
    """

    items: int
    succeeded: int
    failed: int
    invalid: int
    retries: int
    retries_refused: int
    possible_duplicates: int
    not_sent: int
    interrupted: int
    elapsed: float
    held: int = 0
    concurrency_limit: int = 0

    @property
    def throughput(self) -> float:
        """Finished items (succeeded + failed) per second."""
        done = self.succeeded + self.failed
        return done / self.elapsed if self.elapsed > 0 else 0.0
