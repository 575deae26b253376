"""`osvi-async bulk` with rows addressed by customer and agent instead of a session id, run as a
real process against the emulator: each customer's entries land in its active session in
input order, bad rows are failed items naming their line, and --resume resends by customer."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from osvi_async.testing import OsviEmulator
from tests.chaos._cli import last_outcomes
from tests.cli.test_cli import assert_clean, osvi

AGENT = "agent_sales"


def _customers(emulator: OsviEmulator, count: int) -> dict[str, str]:
    """`count` customers, each with an active session with AGENT: customer id -> session id."""
    customers = {f"customer_{n}": "" for n in range(count)}
    for customer in customers:
        customers[customer] = emulator.create_session(agent_uuid=AGENT, customer_id=customer)
    return customers


def _rows(customers: dict[str, str], per_customer: int) -> list[tuple[str, str]]:
    """(customer, context) interleaved across customers, each customer's in order."""
    return [(c, f"{c} entry {i}") for i in range(per_customer) for c in customers]


def _jsonl(path: Path, rows: Sequence[Mapping[str, object]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


async def test_jsonl_customer_rows_land_in_order_and_bad_rows_fail(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """Customer rows keep per-customer order; mixed and half rows are malformed; exit 1."""
    customers = _customers(osvi_emulator, 4)
    session_row = osvi_emulator.create_session()
    rows: list[dict[str, object]] = [
        {"customer_id": c, "agent_uuid": AGENT, "context": text} for c, text in _rows(customers, 6)
    ]
    rows.insert(5, {"session_id": session_row, "context": "by session"})
    rows.insert(7, {"session_id": session_row, "customer_id": "customer_0", "context": "both"})
    rows.insert(9, {"customer_id": "customer_1", "context": "half"})
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    _jsonl(source, rows)
    result = await osvi(
        "bulk", str(source), "--report", str(report), "--concurrency", "8",
        emulator=osvi_emulator,
    )  # fmt: skip
    assert result.code == 1, result.err
    for customer, session in customers.items():
        expected = tuple(text for c, text in _rows(customers, 6) if c == customer)
        assert osvi_emulator.applied(session) == expected
    assert osvi_emulator.applied(session_row) == ("by session",)
    last = last_outcomes(report)
    assert last[7]["error"] == last[9]["error"] == "malformed_input"
    assert str(last[7]["message"]).startswith("line 8: names a session_id and a customer_id")
    assert "go together" in str(last[9]["message"])
    first = last[0]
    assert (first["customer_id"], first["agent_uuid"]) == ("customer_0", AGENT)
    assert first["session_id"] == customers["customer_0"]
    assert last[5]["session_id"] == session_row
    assert "customer_id" not in last[5]
    assert "25 ok, 2 failed" in result.err
    assert_clean(result, osvi_emulator.api_token)


async def test_csv_customer_rows_and_a_customer_without_a_session(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """CSV with customer_id,agent_uuid columns: in order per customer; no session: final item."""
    customers = _customers(osvi_emulator, 3)
    lines = ["customer_id,agent_uuid,context"]
    lines += [f'{c},{AGENT},"{text}, quoted"' for c, text in _rows(customers, 5)]
    lines.insert(4, f"nobody,{AGENT},lost")
    source, report = tmp_path / "items.csv", tmp_path / "report.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result = await osvi(
        "bulk", str(source), "--report", str(report), "--concurrency", "6",
        emulator=osvi_emulator,
    )  # fmt: skip
    assert result.code == 1, result.err
    for customer, session in customers.items():
        expected = tuple(f"{text}, quoted" for c, text in _rows(customers, 5) if c == customer)
        assert osvi_emulator.applied(session) == expected
    nobody = last_outcomes(report)[3]
    assert (nobody["ok"], nobody["customer_id"], nobody["session_id"]) == (False, "nobody", None)
    assert "15 ok, 1 failed" in result.err
    resumed = await osvi(
        "bulk", str(source), "--report", str(report), "--resume", emulator=osvi_emulator
    )
    assert resumed.code == 1, resumed.err
    assert "0 ok, 0 failed, 15 skipped (already done), 0 held, 1 final" in resumed.err


async def test_resume_resends_a_customer_row_flagged(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """A customer row in flight at a kill is resent by customer, flagged possible_duplicate."""
    customers = _customers(osvi_emulator, 2)
    rows = [
        {"customer_id": c, "agent_uuid": AGENT, "context": text} for c, text in _rows(customers, 3)
    ]
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    _jsonl(source, rows)
    first = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
    assert first.code == 0, first.err
    # What a SIGKILL right after item 5 went out leaves: its intent line, no outcome.
    kept = [
        line
        for line in report.read_bytes().splitlines(keepends=True)
        if not (b'"index": 5,' in line and b'"ok"' in line)
    ]
    report.write_bytes(b"".join(kept))
    second = await osvi(
        "bulk", str(source), "--report", str(report), "--resume", emulator=osvi_emulator
    )
    assert second.code == 0, second.err
    assert "1 ok, 0 failed, 5 skipped (already done)" in second.err
    assert "1 possible duplicates" in second.err
    session = customers["customer_1"]
    assert osvi_emulator.applied(session) == (
        "customer_1 entry 0",
        "customer_1 entry 1",
        "customer_1 entry 2",
        "customer_1 entry 2",
    )
    resent = last_outcomes(report)[5]
    assert (resent["ok"], resent["possible_duplicate"]) == (True, True)
    assert (resent["customer_id"], resent["session_id"]) == ("customer_1", session)
    assert_clean(second, osvi_emulator.api_token)


async def test_held_customer_rows_resume_in_order(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """A customer's first entry fails after retries: its later rows are held; resume: in order."""
    customers = _customers(osvi_emulator, 2)
    flaky = customers["customer_0"]
    osvi_emulator.fault_plan.script(flaky, ["engine_error"] * 4)
    rows = [
        {"customer_id": c, "agent_uuid": AGENT, "context": text} for c, text in _rows(customers, 3)
    ]
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    _jsonl(source, rows)
    first = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
    assert first.code == 1
    assert "3 ok, 1 failed, 0 skipped (already done), 2 held" in first.err
    last = last_outcomes(report)
    assert [last[i]["waiting_for"] for i in (2, 4)] == [0, 0]
    assert osvi_emulator.applied(flaky) == ()
    second = await osvi(
        "bulk", str(source), "--report", str(report), "--resume", emulator=osvi_emulator
    )
    assert second.code == 0, second.err
    assert osvi_emulator.applied(flaky) == tuple(f"customer_0 entry {i}" for i in range(3))


async def test_a_maybe_applied_customer_row_names_the_session_it_went_to(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """Every attempt applied, then a 502: the outcome is may-have-been-applied and carries
    the session the entry went to; a padded id is refused as given, never trimmed."""
    customers = _customers(osvi_emulator, 1)
    session = customers["customer_0"]
    osvi_emulator.fault_plan.script(session, ["ambiguous_502"] * 4)
    source, report = tmp_path / "items.csv", tmp_path / "report.jsonl"
    source.write_text(
        f"customer_id,agent_uuid,context\ncustomer_0,{AGENT},x\n customer_0,{AGENT},y\n"
    )
    result = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
    assert result.code == 1, result.err
    applied, padded = last_outcomes(report)[0], last_outcomes(report)[1]
    assert osvi_emulator.applied(session) == ("x",) * int(str(applied["attempts"]))
    assert (applied["ok"], applied["may_have_been_applied"]) == (False, True)
    assert applied["session_id"] == session
    assert (padded["customer_id"], padded["error"]) == (" customer_0", "ClientValidationError")
    assert padded["session_id"] is None
    assert_clean(result, osvi_emulator.api_token)
