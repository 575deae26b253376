"""inject_many refuses arguments and items of the wrong type before anything is sent."""

from __future__ import annotations

import pytest

from osvi_async import ClientValidationError, InjectRequest, OsviClient
from osvi_async.testing import OsviEmulator


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"hold_on_failure": "no"}, "hold_on_failure must be True or False"),
        ({"retry_budget": 1}, "retry_budget must be a RetryBudget"),
        ({"circuit_breaker": "on"}, "circuit_breaker must be a CircuitBreaker"),
        ({"on_send": 3}, "on_send must be callable"),
    ],
)
async def test_bad_run_options_are_refused_before_sending(
    osvi_emulator: OsviEmulator, options: dict[str, object], problem: str
) -> None:
    """A truthy string or a number where an object is expected: ClientValidationError."""
    session = osvi_emulator.create_session()
    async with OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url) as client:
        with pytest.raises(ClientValidationError, match=problem):
            client.inject_many([(session, "x")], **options)  # type: ignore[arg-type]
    assert osvi_emulator.requests_for(session) == 0


async def test_a_non_bool_resend_flag_is_an_invalid_item(osvi_emulator: OsviEmulator) -> None:
    """InjectRequest(may_have_been_applied="no") fails alone, unsent; the rest goes on."""
    session = osvi_emulator.create_session()
    items = [
        InjectRequest(session, "bad", may_have_been_applied="no"),  # type: ignore[arg-type]
        InjectRequest(session, "good"),
    ]
    async with OsviClient(osvi_emulator.api_token, base_url=osvi_emulator.base_url) as client:
        async with client.inject_many(items) as run:
            outcomes = {outcome.index: outcome async for outcome in run}
        with pytest.raises(ClientValidationError, match="may_have_been_applied"):
            await client.inject_context(session, "x", may_have_been_applied="no")  # type: ignore[arg-type]
    assert isinstance(outcomes[0].error, ClientValidationError)
    assert outcomes[1].ok
    assert osvi_emulator.applied(session) == ("good",)
