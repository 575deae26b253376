"""--log-level and --log-format: the SDK's records on stderr, as text or JSON lines."""

from __future__ import annotations

import json

from osvi_async.testing import FaultPlan, OsviEmulator
from tests.cli.test_cli import assert_clean, osvi


def _json_lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


async def test_json_lines_carry_the_retry_fields(osvi_emulator: OsviEmulator) -> None:
    """A retried inject logs one JSON line per retry with event, endpoint, attempt, delay,
    status and error type, and the entry still lands once."""
    plan = FaultPlan()
    osvi_emulator.fault_plan = plan
    session = osvi_emulator.create_session()
    plan.script(session, ["unavailable"])
    result = await osvi(
        "--log-level", "info", "--log-format", "json", "inject", session, "hello",
        emulator=osvi_emulator,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert osvi_emulator.applied(session) == ("hello",)
    [retry] = _json_lines(result.err)
    assert retry["event"] == "retry"
    assert retry["level"] == "info"
    assert retry["logger"] == "osvi_async"
    assert retry["endpoint"] == "inject_context"
    assert retry["attempt"] == 1
    assert retry["status"] == 503
    assert isinstance(retry["delay"], float)
    assert isinstance(retry["error_type"], str)
    assert result.err.strip().splitlines() == [json.dumps(retry)]  # nothing but JSON lines
    assert_clean(result, osvi_emulator.api_token)


async def test_text_lines_at_debug_show_the_give_up(osvi_emulator: OsviEmulator) -> None:
    """--log-level debug shows the give-up record as a `debug:` line; the token never."""
    plan = FaultPlan()
    osvi_emulator.fault_plan = plan
    session = osvi_emulator.create_session()
    plan.script(session, ["engine_rejected"])
    result = await osvi("--log-level", "debug", "inject", session, "x", emulator=osvi_emulator)
    assert result.code == 1
    assert osvi_emulator.applied(session) == ()
    give_up = [line for line in result.err.splitlines() if "giving up after 1 attempt" in line]
    assert len(give_up) == 1
    assert give_up[0].startswith("debug: inject_context for session ")
    assert_clean(result, osvi_emulator.api_token)


async def test_without_the_options_warnings_stay_plain(osvi_emulator: OsviEmulator) -> None:
    """Without --log-level/--log-format, a retry (INFO) prints nothing on stderr."""
    plan = FaultPlan()
    osvi_emulator.fault_plan = plan
    session = osvi_emulator.create_session()
    plan.script(session, ["unavailable"])
    result = await osvi("inject", session, "hello", emulator=osvi_emulator)
    assert result.code == 0, result.err
    assert result.err == ""
    assert osvi_emulator.applied(session) == ("hello",)
