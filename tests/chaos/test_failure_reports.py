"""Scenario 1, scripted: what a failed call says when an earlier attempt was applied.

The fault mixes find items that end with an error the docs call "certainly not applied"
(docs/retries.md, "Duplicates"; docs/errors.md) although an earlier, ambiguous attempt of the
same call was applied. These scripts reproduce each shape of it on one call, deterministically.
"""

from __future__ import annotations

import pytest

from osvi_async import OsviClient, OsviError, RetryPolicy
from osvi_async.testing import OsviEmulator
from tests.chaos._harness import certainly_not_applied
from tests.chaos._report import Recorder

POLICY = RetryPolicy(max_retries=3, initial_delay=0.001, max_delay=0.002, max_retry_after=0.002)

SCRIPTS = {
    "ambiguous_502-then-rejected": ["ambiguous_502", "engine_rejected"],
    "drop-then-unreachable": ["ambiguous_drop", "engine_error", "engine_error", "engine_error"],
    "ambiguous_502-then-503s": ["ambiguous_502", "unavailable", "unavailable", "unavailable"],
    "drop-then-429s": ["ambiguous_drop", "rate_limited", "rate_limited", "rate_limited"],
}


@pytest.mark.parametrize("script", SCRIPTS.values(), ids=SCRIPTS.keys())
async def test_failure_after_an_applied_attempt_does_not_say_not_applied(
    osvi_emulator: OsviEmulator, reliability: Recorder, script: list[str]
) -> None:
    """Attempt 1 is applied, the last fails "certainly not applied": the error must not say so."""
    session = osvi_emulator.create_session()
    osvi_emulator.fault_plan.script(session, script)
    async with OsviClient(
        osvi_emulator.api_token, base_url=osvi_emulator.base_url, retry=POLICY
    ) as client:
        with pytest.raises(OsviError) as caught:
            await client.inject_context(session, "applied by attempt 1")
    error = caught.value
    applied = osvi_emulator.applied(session)
    misreported = bool(applied) and certainly_not_applied(error)
    reliability.add(
        section=1,
        scenario="scripted: applied attempt, then a certain failure",
        items=1,
        faults=len(script),
        requests=osvi_emulator.requests_for(session),
        misreported=int(misreported),
        note=f"{' -> '.join(script)}: {type(error).__name__} after {error.attempts} attempts",
    )

    assert osvi_emulator.requests_for(session) == len(script)
    assert error.attempts == len(script)
    assert applied == ("applied by attempt 1",)
    assert not certainly_not_applied(error), (
        f"{type(error).__name__} ({error.message[:80]}) reads as certainly not applied, "
        f"but attempt 1 of this call was applied"
    )
