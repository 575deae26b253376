"""--log-level and --log-format: the SDK's records on stderr, as text or JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

from osvi_async.testing import FaultPlan, OsviEmulator
from tests.cli.test_cli import assert_clean, osvi

PII_CUSTOMER = "cust-PII-7f3a9"


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


async def test_json_format_any_case_makes_the_error_line_a_record(
    osvi_emulator: OsviEmulator,
) -> None:
    """`--log-format JSON` is accepted like `--log-level DEBUG`, and the command's closing
    `error:` line comes out as a JSON record (event `error`): stderr is JSON lines only."""
    plan = FaultPlan()
    osvi_emulator.fault_plan = plan
    session = osvi_emulator.create_session()
    plan.script(session, ["engine_rejected"])
    result = await osvi(
        "--log-level", "DEBUG", "--log-format", "JSON", "inject", session, "x",
        emulator=osvi_emulator,
    )  # fmt: skip
    assert result.code == 1
    assert osvi_emulator.applied(session) == ()
    records = [json.loads(line) for line in result.err.splitlines()]
    assert [record["event"] for record in records][-2:] == ["give_up", "error"]
    error = records[-1]
    assert (error["level"], error["logger"]) == ("error", "osvi_async.cli")
    assert f"inject_context for session {session}" in str(error["message"])
    assert_clean(result, osvi_emulator.api_token)


async def test_bulk_in_json_format_writes_only_records_and_no_customer_id(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """A bulk run by customer with a retried lookup, in `--log-format json`: every stderr line
    is a JSON record (no progress bar), the totals come as a `summary` record, and no record
    holds the customer id (the retry names `customer #<hash>`)."""
    plan = FaultPlan(all_endpoints=True)
    osvi_emulator.fault_plan = plan
    session = osvi_emulator.create_session(customer_id=PII_CUSTOMER)
    plan.script_endpoint("active_session", ["unavailable"])
    source = tmp_path / "items.jsonl"
    rows = [{"customer_id": PII_CUSTOMER, "agent_uuid": "agent_emulator", "context": text}
            for text in ("one", "two")]  # fmt: skip
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = await osvi(
        "--log-level", "info", "--log-format", "json", "bulk", str(source),
        emulator=osvi_emulator,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert osvi_emulator.applied(session) == ("one", "two")
    records = [json.loads(line) for line in result.err.splitlines()]
    events = [record["event"] for record in records]
    assert events == ["retry", "summary"]
    assert "get_active_session for customer #" in str(records[0]["message"])
    assert str(records[-1]["message"]).startswith("2 ok, 0 failed")
    assert PII_CUSTOMER not in result.err
    assert_clean(result, osvi_emulator.api_token)


async def test_bulk_in_text_format_keeps_its_plain_summary(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """Without --log-format json, bulk's summary stays the plain line it always was."""
    session = osvi_emulator.create_session()
    source = tmp_path / "items.jsonl"
    source.write_text(json.dumps({"session_id": session, "context": "one"}) + "\n")
    result = await osvi("bulk", str(source), emulator=osvi_emulator)
    assert result.code == 0, result.err
    assert osvi_emulator.applied(session) == ("one",)
    assert result.err.splitlines()[-1].startswith("1 ok, 0 failed, 0 skipped")
    assert not any(line.startswith("{") for line in result.err.splitlines())
