"""The SDK against Prism, a mock built by a third party from osvi-chat-v1.yaml alone.

Prism's answers are made up from the schemas: a fixed UUID for `ChatSession.id` (the schema says
`format: uuid`), the literal ``"string"`` for every other string, 0 for numbers, ``true`` for
booleans, the first enum value, 2019-08-24T14:15:22Z for timestamps. So every answer here is one
the spec allows and nobody on this project wrote, and the SDK must decode each of them. Prism also
checks each request (token header and body), so every success below shows the SDK's request
followed the spec too.

Prism names the session ``"string"`` in support and inject_context answers, whatever session the
request was for. The SDK takes an answer for another session as a sign that something is wrong
(a proxy mixing answers, say) and raises `ResponseDecodeError` with `may_have_been_applied=True`:
those tests assert that.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from osvi_async import (
    AuthenticationError,
    BadRequestError,
    ChatSession,
    EngineError,
    EngineRejectedError,
    NotFoundError,
    OsviClient,
    ResponseDecodeError,
    ServerError,
)
from tests.prism.conftest import answering
from tests.support import SESSION_ID

AGENT = "agent_IsZ3Q6Sf_60Eh26XQMGbz-R_og"
CUSTOMER = "+15551112222"
PRISM_SESSION_ID = "497f6eca-6276-4993-bfeb-53cbbbba6f08"  # Prism's example for format: uuid
PRISM_TIME = datetime(2019, 8, 24, 14, 15, 22, tzinfo=UTC)


def _assert_prisms_session(session: ChatSession) -> None:
    assert session.id == PRISM_SESSION_ID
    assert (session.chat_agent_id, session.account_id) == (0, 0)
    assert session.customer_id == "string"
    assert (session.mode, session.status, session.current_state) == ("ai", "active", "string")
    assert session.help_requested is True
    assert session.active_human == "string"
    assert dict(session.metadata.input_fields) == {}
    assert dict(session.metadata.state_fields) == {}
    assert session.metadata.context == ("string",)
    assert (session.created_at, session.updated_at) == (PRISM_TIME, PRISM_TIME)


async def test_create_session_decodes_prisms_session(prism: OsviClient) -> None:
    """create_session with input fields and context is accepted by Prism and its answer decodes."""
    session = await prism.create_session(
        AGENT, CUSTOMER, input_fields={"first_name": "Alex"}, context=["Came from the web chat"]
    )
    _assert_prisms_session(session)


async def test_get_active_session_decodes_prisms_session(prism: OsviClient) -> None:
    """get_active_session decodes Prism's session, with aware timestamps and tuple context."""
    _assert_prisms_session(await prism.get_active_session(CUSTOMER, AGENT))


async def test_get_active_sessions_refuses_a_single_session_for_the_map(prism: OsviClient) -> None:
    """Prism answers the by-agent lookup with one session (oneOf's first branch): a decode error."""
    with pytest.raises(ResponseDecodeError) as caught:
        await prism.get_active_sessions(CUSTOMER)
    assert caught.value.may_have_been_applied is False
    assert "keyed by agent uuid at $.data, got a single session" in str(caught.value)


async def test_send_message_decodes_prisms_reply(prism: OsviClient) -> None:
    """send_message is accepted by Prism and decodes its reply field by field."""
    reply = await prism.send_message(AGENT, CUSTOMER, "Hi, I need help.")
    assert (reply.session_id, reply.reply, reply.state, reply.mode) == (
        "string",
        "string",
        "string",
        "ai",
    )
    assert reply.help_requested is True


SUPPORT_CALLS = [
    ("takeover", None),
    ("takeover", "A human agent is joining the conversation."),
    ("tell", "Offer the customer a callback tomorrow morning."),
    ("whisper", "They already tried a refund once."),
    ("end", None),
    ("close", None),
    (None, "Hi, this is Sam from support."),
]


@pytest.mark.parametrize(("command", "message"), SUPPORT_CALLS)
async def test_support_refuses_prisms_answer_for_another_session(
    prism: OsviClient, command: str | None, message: str | None
) -> None:
    """Prism accepts each support command; its answer names session "string": maybe applied."""
    with pytest.raises(ResponseDecodeError) as caught:
        await prism.support(SESSION_ID, command, message)
    assert caught.value.may_have_been_applied is True
    assert f"'string', not the session {SESSION_ID}" in str(caught.value)


async def test_close_session_refuses_prisms_answer_for_another_session(prism: OsviClient) -> None:
    """close_session sends a close Prism accepts, then refuses the answer for "string"."""
    with pytest.raises(ResponseDecodeError) as caught:
        await prism.close_session(SESSION_ID)
    assert caught.value.may_have_been_applied is True


async def test_inject_context_refuses_prisms_answer_for_another_session(prism: OsviClient) -> None:
    """Prism's inject answer names session "string": a ResponseDecodeError, maybe applied."""
    with pytest.raises(ResponseDecodeError) as caught:
        await prism.inject_context(SESSION_ID, "Voice call ended: wants a refund.")
    assert caught.value.may_have_been_applied is True
    assert f"'string', not the session {SESSION_ID}" in str(caught.value)


async def test_inject_for_customer_resolves_prisms_session_then_refuses_the_answer(
    prism: OsviClient,
) -> None:
    """inject_context_for_customer looks up Prism's session, injects, then refuses "string"."""
    with pytest.raises(ResponseDecodeError) as caught:
        await prism.inject_context_for_customer(CUSTOMER, AGENT, "Voice call ended.")
    assert caught.value.may_have_been_applied is True
    assert f"not the session {PRISM_SESSION_ID}" in str(caught.value)


async def test_a_forced_404_on_the_lookup_is_not_found(prism_url: str) -> None:
    """Prism's documented 404 for one agent's lookup is a NotFoundError, not applied."""
    async with answering(prism_url, 404) as client:
        with pytest.raises(NotFoundError) as caught:
            await client.get_active_session(CUSTOMER, AGENT)
    assert caught.value.status == 404
    assert caught.value.may_have_been_applied is False


async def test_a_forced_404_on_the_by_agent_lookup_is_an_empty_map(prism_url: str) -> None:
    """A 404 for the lookup without agent_uuid means no sessions: an empty mapping."""
    async with answering(prism_url, 404) as client:
        assert dict(await client.get_active_sessions(CUSTOMER)) == {}


async def test_a_forced_404_on_inject_is_session_not_found(prism_url: str) -> None:
    """Prism's documented inject 404 decodes to NotFoundError with code session_not_found."""
    async with answering(prism_url, 404) as client:
        with pytest.raises(NotFoundError) as caught:
            await client.inject_context(SESSION_ID, "note")
    assert caught.value.code == "session_not_found"


async def test_a_forced_400_on_inject_is_a_bad_request(prism_url: str) -> None:
    """Prism's documented inject 400 decodes to BadRequestError with code context_required."""
    async with answering(prism_url, 400) as client:
        with pytest.raises(BadRequestError) as caught:
            await client.inject_context(SESSION_ID, "note")
    assert caught.value.code == "context_required"


async def test_a_forced_502_on_support_is_the_engine_refusing_tell(prism_url: str) -> None:
    """Prism's documented support 502 (tell during takeover) is an EngineRejectedError."""
    async with answering(prism_url, 502) as client:
        with pytest.raises(EngineRejectedError) as caught:
            await client.support(SESSION_ID, "tell", "Offer a callback.")
    assert caught.value.upstream_body == {
        "state": "rejected",
        "reason": "tell_not_allowed_during_takeover",
    }


async def test_a_forced_401_is_an_authentication_error(prism_url: str) -> None:
    """Prism's 401 answer (any error envelope allowed) is an AuthenticationError."""
    async with answering(prism_url, 401) as client:
        with pytest.raises(AuthenticationError):
            await client.create_session(AGENT, CUSTOMER)


async def test_a_forced_502_on_send_message_may_have_been_applied(prism_url: str) -> None:
    """A made-up 502 on send_message is an EngineError raised at once as maybe applied."""
    async with answering(prism_url, 502) as client:
        with pytest.raises(EngineError) as caught:
            await client.send_message(AGENT, CUSTOMER, "Hi")
    assert not isinstance(caught.value, EngineRejectedError)
    assert caught.value.may_have_been_applied is True


async def test_a_forced_500_on_create_session_may_have_been_applied(prism_url: str) -> None:
    """A 500 on create_session is a ServerError marked maybe applied (it may have opened one)."""
    async with answering(prism_url, 500) as client:
        with pytest.raises(ServerError) as caught:
            await client.create_session(AGENT, CUSTOMER)
    assert caught.value.status == 500
    assert caught.value.may_have_been_applied is True
