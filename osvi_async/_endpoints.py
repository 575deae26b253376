"""Every Chat v1 endpoint as data: method, answer decoder, safety class, and what to tell the
caller when a request that may have been applied is not retried.

`_call.call` runs any of them the same way; the client only builds the URL and the body. The
safety classes (see `_retry.Safety`) are the table docs/retries.md shows:

=========================================  ============  =========================================
endpoint                                   class         why
=========================================  ============  =========================================
get_active_session(s)                      read          changes nothing
create_session                             at most once  a repeat closes the session just opened
send_message                               at most once  a repeat runs another agent turn and
                                                         shows the customer the message twice
support tell, plain message,               at most once  the text reaches the customer (or runs
takeover with a message                                  an agent turn) once more
support takeover (no message), end, close  idempotent    a repeat sets the same state
support whisper                            at least once private note appended: a lost note is
                                                         worse than a repeated one (flagged)
inject_context                             at least once a lost entry is worse than a repeated
                                                         one (flagged `possible_duplicate`)
=========================================  ============  =========================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, Generic, Protocol, TypeVar

import attrs

from osvi_async._answers import (
    decode_active_sessions,
    decode_chat_session,
    decode_message_reply,
    decode_support_result,
)
from osvi_async._decode import Scrubber, decode_inject_context
from osvi_async._retry import Safety, logger
from osvi_async.models import ChatSession, InjectContextResult, MessageReply, SupportResult

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
R = TypeVar("R", MessageReply, SupportResult)

BUCKET_SIZE: Final = 5
"""Entries a session keeps (FIFO); appending a sixth drops the oldest."""


class Decoder(Protocol[T_co]):
    """Turns a 2xx answer into the endpoint's result, or raises `ResponseDecodeError`."""

    def __call__(
        self, status: int, body: bytes, *, session_id: str, attempts: int, scrubber: Scrubber
    ) -> T_co: ...


Accept = Callable[[T, str, bool, bool], T]
"""Last look at a success: (result, entry sent, may an earlier attempt have applied it,
did every such attempt settle) -> the result to return."""


@attrs.frozen
class Endpoint(Generic[T]):
    """One endpoint (or one support command): everything the call loop needs besides the
    request itself.

    Attributes:
        name: How messages and logs name the operation ("create_session").
        method: The HTTP method.
        safety: What repeating the request can do; decides what is retried.
        decode: Builds the result from a 2xx body.
        accept: Optional last look at a success (duplicate flags, warnings).
        recovery: Appended to the message of a failure after which the request may have
            been applied, so that the caller knows how to find out.
        not_found_hint: Replaces the generic hint of a 404 where it means something else.
    """

    name: str
    method: str
    safety: Safety
    decode: Decoder[T]
    accept: Accept[T] | None = None
    recovery: str | None = None
    not_found_hint: str | None = None


def _accept_entry(
    result: InjectContextResult, context: str, ambiguous: bool, settled: bool
) -> InjectContextResult:
    """The entry-missing warning, and the duplicate flag when an earlier attempt (or send)
    may have applied the entry."""
    if context not in result.context:
        logger.warning(
            "inject_context for session %s: the API answered 200 but the returned bucket does "
            "not hold the entry (other writers may have pushed it out); accepted as applied",
            result.session_id,
            extra={"event": "entry_missing", "endpoint": "inject_context", "status": 200},
        )
    if ambiguous:
        return flag_possible_duplicate(result, context, settled=settled)
    return result


def flag_possible_duplicate(
    result: InjectContextResult, context: str, *, settled: bool
) -> InjectContextResult:
    """After an attempt that may have applied the entry, flag the result unless the bucket
    rules a duplicate out.

    The bucket can rule one out only if every maybe-applied attempt had *settled* (the API
    itself answered for it, see `_retry.may_still_apply`) before it was read: an attempt that
    timed out or lost its connection may still apply its entry after the retry's answer was
    sent, and a resend (`may_have_been_applied=True`) follows a call or run we know nothing
    more about. So with `settled` False the result is always flagged.

    With `settled` True, only a bucket that is not full (nothing has scrolled out of it yet)
    and holds the entry exactly once proves that it was applied once. Anything else (the entry
    twice anywhere, however many other writers came in between; a full bucket, from which an
    earlier copy may have dropped; a bucket without the entry) cannot rule a duplicate out.

    What it cannot see: it never proves a duplicate, only fails to rule one out, so it errs
    towards flagging (false positives are the price): a timed-out attempt that the server
    never applied, a copy pushed out of a full bucket, or the same text sent by another
    writer all lead to a flag.
    """
    if settled:
        bucket = result.context
        if len(bucket) < BUCKET_SIZE and bucket.count(context) == 1:
            return result
    logger.warning(
        "inject_context for session %s: an earlier attempt may have been applied and the "
        "bucket cannot rule out that the entry was appended twice%s (possible_duplicate)",
        result.session_id,
        "" if settled else " (that attempt may apply after the bucket was read)",
        extra={"event": "possible_duplicate", "endpoint": "inject_context"},
    )
    return attrs.evolve(result, possible_duplicate=True)


def _accept_reply(result: R, _text: str, ambiguous: bool, _settled: bool) -> R:
    """A message or command sent again after an attempt that may have applied it (a whisper,
    or anything under `retry_ambiguous=True`) may have been applied twice: flag it."""
    return attrs.evolve(result, possible_duplicate=True) if ambiguous else result


def _support_decoder(command: str | None) -> Decoder[SupportResult]:
    """The support decoder for one command: the answer must name it (or say null)."""

    def decode(
        status: int, body: bytes, *, session_id: str, attempts: int, scrubber: Scrubber
    ) -> SupportResult:
        return decode_support_result(
            status,
            body,
            session_id=session_id,
            attempts=attempts,
            scrubber=scrubber,
            command=command,
        )

    return decode


INJECT_CONTEXT: Final = Endpoint[InjectContextResult](
    name="inject_context",
    method="POST",
    safety=Safety.AT_LEAST_ONCE,
    decode=decode_inject_context,
    accept=_accept_entry,
)
CREATE_SESSION: Final = Endpoint[ChatSession](
    name="create_session",
    method="POST",
    safety=Safety.AT_MOST_ONCE,
    decode=decode_chat_session,
    recovery=(
        "the session may have been created: look it up with "
        "get_active_session(customer_id, agent_uuid) before creating another (creating "
        "closes the customer's active session with that agent)"
    ),
)
GET_ACTIVE_SESSION: Final = Endpoint[ChatSession](
    name="get_active_session",
    method="GET",
    safety=Safety.READ,
    decode=decode_chat_session,
    not_found_hint=(
        "the customer has no active session with this agent; open one with create_session "
        "or send_message"
    ),
)
GET_ACTIVE_SESSIONS: Final = Endpoint[Mapping[str, ChatSession]](
    name="get_active_sessions",
    method="GET",
    safety=Safety.READ,
    decode=decode_active_sessions,
)
SEND_MESSAGE: Final = Endpoint[MessageReply](
    name="send_message",
    method="POST",
    safety=Safety.AT_MOST_ONCE,
    decode=decode_message_reply,
    accept=_accept_reply,
    recovery=(
        "the message may have been delivered and answered: sending it again may show the "
        "customer the exchange twice"
    ),
    not_found_hint=(
        "the session named is unknown or closed (without session_id: the agent or customer "
        "was not found)"
    ),
)

_SAID_TO_CUSTOMER: Final = (
    "the operator message may have reached the customer: sending it again may show it twice"
)
_ALREADY_CLOSED: Final = "the session may already be closed by the request that failed"


def _support(
    command: str | None, safety: Safety, recovery: str | None = None
) -> Endpoint[SupportResult]:
    name = "support (plain message)" if command is None else f"support {command}"
    accept = _accept_reply if safety in (Safety.AT_LEAST_ONCE, Safety.AT_MOST_ONCE) else None
    return Endpoint(name, "POST", safety, _support_decoder(command), accept, recovery)


SUPPORT: Final[Mapping[str | None, Endpoint[SupportResult]]] = {
    None: _support(None, Safety.AT_MOST_ONCE, _SAID_TO_CUSTOMER),
    "tell": _support(
        "tell",
        Safety.AT_MOST_ONCE,
        "the guidance may have been applied and an agent turn run: telling again may "
        "show the customer a second answer",
    ),
    "takeover": _support("takeover", Safety.IDEMPOTENT),
    "whisper": _support("whisper", Safety.AT_LEAST_ONCE),
    "end": _support("end", Safety.IDEMPOTENT),
    "close": _support("close", Safety.IDEMPOTENT, _ALREADY_CLOSED),
}
"""Support endpoints by command, when no `message` reaches the customer."""

SUPPORT_WITH_MESSAGE: Final[Mapping[str, Endpoint[SupportResult]]] = {
    "takeover": _support("takeover", Safety.AT_MOST_ONCE, _SAID_TO_CUSTOMER),
    "end": _support("end", Safety.AT_MOST_ONCE, _SAID_TO_CUSTOMER),
    "close": _support("close", Safety.AT_MOST_ONCE, _SAID_TO_CUSTOMER),
}
"""takeover, end and close carrying a `message`: the message is shown to the customer, so
a repeat could show it twice; these are at most once."""
