"""The bulk report and `--resume`: torn tails repaired, another input's report refused, resends
flagged, held items resent in order, and text that is not valid Unicode kept as valid JSON."""

from __future__ import annotations

import json
from pathlib import Path

from osvi_async import InjectOutcome, InjectRequest, RunStoppedError
from osvi_async.cli._report import InputIdentity, ReportState, ReportWriter, open_report
from osvi_async.testing import OsviEmulator
from tests.chaos._cli import last_outcomes, report_entries, write_input
from tests.cli.test_cli import assert_clean, osvi

IDENTITY = InputIdentity(sha256="0" * 64, bytes=0, records=0)
HEADER = json.dumps({"osvi_async_report": 1, "input": IDENTITY.as_json()}).encode() + b"\n"


def read_report(report: Path) -> ReportState:
    """Open the report as `--resume` does (repairing its tail), then close it again."""
    state, writer = open_report(report, IDENTITY, resume=True)
    writer.close()
    return state


def _outcome(index: int, *, ok: bool, maybe: bool = False, final: bool = False) -> bytes:
    entry = {
        "index": index,
        "ok": ok,
        "may_have_been_applied": maybe,
        "refused_for_good": final,
    }
    return json.dumps(entry).encode() + b"\n"


def test_torn_last_line_is_cut_off_with_a_warning(tmp_path: Path) -> None:
    """A last line without its newline is removed from the file, and said so once."""
    report = tmp_path / "r.jsonl"
    intact = HEADER + b'{"index": 0, "sending": true}\n' + _outcome(0, ok=True)
    report.write_bytes(intact + b'{"index": 1, "ok": tr')
    state = read_report(report)
    assert report.read_bytes() == intact
    assert state.is_done(0)
    assert not state.is_done(1)
    [warning] = state.warnings
    assert "torn last line (4)" in warning


def test_whole_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    """A complete last line of ours lacking only its newline is kept, and the newline added."""
    report = tmp_path / "r.jsonl"
    for content in (HEADER + _outcome(0, ok=True), HEADER):
        report.write_bytes(content[:-1])
        state = read_report(report)
        assert report.read_bytes() == content
        assert state.is_done(0) == (content != HEADER)
        [warning] = state.warnings
        assert "added the missing newline to its last line" in warning


def test_partial_utf8_and_bad_json_tails_are_repaired(tmp_path: Path) -> None:
    """A last line cut inside a UTF-8 sequence, or not JSON, is cut off; nothing raises."""
    report = tmp_path / "r.jsonl"
    for tail in ('{"index": 0, "message": "caf\u00e9'.encode()[:-1], b"{not json\n"):
        report.write_bytes(HEADER + tail)
        state = read_report(report)
        assert report.read_bytes() == HEADER
        assert state.has_header
        assert len(state.warnings) == 1


def test_corrupt_lines_in_the_middle_are_skipped(tmp_path: Path) -> None:
    """Unreadable lines before the end are warned about and skipped, the file kept as is."""
    report = tmp_path / "r.jsonl"
    content = (
        HEADER + b"\xff\xfe garbage\n" + _outcome(0, ok=True) + b"[1, 2]\n" + _outcome(1, ok=True)
    )
    report.write_bytes(content)
    state = read_report(report)
    assert report.read_bytes() == content
    assert (state.is_done(0), state.is_done(1)) == (True, True)
    [warning] = state.warnings
    assert "skipped 2 unreadable line(s) in the middle: 2, 4" in warning


def test_deeply_nested_report_lines_are_unreadable_not_fatal(tmp_path: Path) -> None:
    """A line nested deeper than json can parse is an unreadable line, in the middle or last."""
    report = tmp_path / "r.jsonl"
    deep = b"[" * 100_000 + b"]" * 100_000 + b"\n"
    content = HEADER + _outcome(0, ok=True) + deep + _outcome(1, ok=True)
    report.write_bytes(content + deep)
    state = read_report(report)
    assert report.read_bytes() == content
    assert (state.is_done(0), state.is_done(1)) == (True, True)
    assert len(state.warnings) == 2
    assert "skipped 1 unreadable line(s) in the middle: 3" in state.warnings[1]


def test_may_have_been_applied_is_sticky_until_ok(tmp_path: Path) -> None:
    """An intent without an outcome, or a maybe-applied failure, marks the record until an ok."""
    report = tmp_path / "r.jsonl"
    report.write_bytes(
        HEADER
        + b'{"index": 0, "sending": true}\n'  # killed in flight
        + b'{"index": 1, "sending": true}\n'
        + _outcome(1, ok=False, maybe=True)
        + b'{"index": 1, "sending": true}\n'
        + _outcome(1, ok=False)  # a later certain failure does not clear the earlier maybe
        + b'{"index": 2, "sending": true}\n'
        + _outcome(2, ok=False, maybe=True)
        + _outcome(2, ok=True)
        + b'{"index": 3, "sending": true}\n'
        + _outcome(3, ok=False)
        + _outcome(4, ok=False, final=True)
    )
    state = read_report(report)
    assert [state.may_have_been_applied(i) for i in range(5)] == [True, True, False, False, False]
    assert [state.is_done(i) for i in range(5)] == [False, False, True, False, False]
    assert [state.is_final(i) for i in range(5)] == [False, False, False, False, True]


def test_lone_surrogates_are_written_as_valid_utf8_json(tmp_path: Path) -> None:
    """A session id or message with a lone surrogate never crashes the writer."""
    report = tmp_path / "r.jsonl"
    writer = ReportWriter(report.open("ab", buffering=0))
    error = RunStoppedError("stopped \udcff here", request_sent=False)
    outcome = InjectOutcome(0, InjectRequest("s\ud800", "c"), ok=False, error=error)
    writer.write_outcome(
        index=0,
        line=1,
        session_id="s\ud800",
        outcome=outcome,
        refused_for_good=False,
        waiting_for=None,
    )
    writer.close()
    [entry] = [json.loads(line) for line in report.read_bytes().decode("utf-8").splitlines()]
    assert entry["session_id"] == "s\ud800"
    assert entry["message"].startswith("stopped \udcff here")


def _two_sessions(emulator: OsviEmulator, tmp_path: Path) -> tuple[list[InjectRequest], Path]:
    a, b = emulator.create_session(), emulator.create_session()
    items = [InjectRequest(s, f"{s[:4]} {i}") for i in range(3) for s in (a, b)]
    source = tmp_path / "items.jsonl"
    write_input(source, items)
    return items, source


async def test_report_for_another_input_is_refused(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """--resume with a report written for other content: exit 2, one line, nothing sent."""
    _, source = _two_sessions(osvi_emulator, tmp_path)
    report = tmp_path / "report.jsonl"
    first = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
    assert first.code == 0, first.err
    received = osvi_emulator.stats.requests_total
    source.write_text(source.read_text().replace(" 2", " 9"))
    second = await osvi(
        "bulk", str(source), "--report", str(report), "--resume", emulator=osvi_emulator
    )
    assert second.code == 2
    [line] = second.err.strip().splitlines()
    assert "was written for another input" in line
    assert osvi_emulator.stats.requests_total == received
    assert_clean(second, osvi_emulator.api_token)


async def test_resume_from_stdin_is_refused(osvi_emulator: OsviEmulator, tmp_path: Path) -> None:
    """stdin cannot be checked against a report before sending: --resume - is exit 2."""
    report = tmp_path / "report.jsonl"
    result = await osvi(
        "bulk", "-", "--report", str(report), "--resume", emulator=osvi_emulator, stdin=b""
    )
    assert result.code == 2
    assert "stdin cannot be checked" in result.err


async def test_resend_after_a_kill_is_flagged(osvi_emulator: OsviEmulator, tmp_path: Path) -> None:
    """An intent line without its outcome (a kill in flight): resent, flagged possible_duplicate."""
    items, source = _two_sessions(osvi_emulator, tmp_path)
    report = tmp_path / "report.jsonl"
    first = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
    assert first.code == 0, first.err
    # Cut the report back to what a SIGKILL just after item 5 went out would leave.
    kept = [
        line
        for line in report.read_bytes().splitlines(keepends=True)
        if not (b'"index": 5,' in line and b'"ok"' in line)
    ]
    report.write_bytes(b"".join(kept) + b'{"index": 5, "ok": tr')  # and a torn line
    second = await osvi(
        "bulk", str(source), "--report", str(report), "--resume", emulator=osvi_emulator
    )
    assert second.code == 0, second.err
    assert "removed its torn last line" in second.err
    assert "1 ok, 0 failed, 5 skipped (already done)" in second.err
    assert "1 possible duplicates" in second.err
    # The SDK's warning comes through the console as a line of its own, not through the bar.
    [warning] = [line for line in second.err.splitlines() if "(possible_duplicate)" in line]
    assert warning.startswith("warning: inject_context for session ")
    session = items[5].session_id
    assert osvi_emulator.applied(session).count(items[5].context) == 2
    assert last_outcomes(report)[5]["possible_duplicate"] is True
    assert all(entry for entry in report_entries(report))  # every line complete again


async def test_held_items_wait_for_their_session_and_resume_in_order(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """Retries exhausted on a session's first item: its later items are held; resume: in order."""
    items, source = _two_sessions(osvi_emulator, tmp_path)
    flaky = items[0].session_id
    osvi_emulator.fault_plan.script(flaky, ["engine_error"] * 4)
    report = tmp_path / "report.jsonl"
    first = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
    assert first.code == 1
    assert "3 ok, 1 failed, 0 skipped (already done), 2 held" in first.err
    assert "run again with --resume to retry what failed" in first.err
    last = last_outcomes(report)
    assert [last[i]["waiting_for"] for i in (2, 4)] == [0, 0]
    assert all(last[i]["held"] is True and last[i]["attempts"] == 0 for i in (2, 4))
    assert last[0]["refused_for_good"] is False
    assert osvi_emulator.applied(flaky) == ()
    second = await osvi(
        "bulk", str(source), "--report", str(report), "--resume", emulator=osvi_emulator
    )
    assert second.code == 0, second.err
    assert osvi_emulator.applied(flaky) == tuple(items[i].context for i in (0, 2, 4))


async def test_resume_keeps_a_last_ok_line_without_its_newline(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """The last item's ok line without its newline: the resume skips it, sends nothing again."""
    a = osvi_emulator.create_session()
    items = [InjectRequest(a, f"item {i}") for i in range(3)]
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    write_input(source, items)
    first = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
    assert first.code == 0, first.err
    content = report.read_bytes()
    report.write_bytes(content[:-1])
    result = await osvi(
        "bulk", str(source), "--report", str(report), "--resume", emulator=osvi_emulator
    )
    assert result.code == 0, result.err
    assert "0 ok, 0 failed, 3 skipped" in result.err
    assert "added the missing newline to its last line" in result.err
    assert osvi_emulator.applied(a) == ("item 0", "item 1", "item 2")
    assert report.read_bytes() == content
    assert_clean(result, osvi_emulator.api_token)


async def test_a_held_item_on_resume_names_the_record_it_waits_for(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """On --resume the run's positions are not the records' numbers (done records are
    skipped): a held item's message names the record it waits for, as waiting_for does."""
    items, source = _two_sessions(osvi_emulator, tmp_path)
    second_session = items[1].session_id  # records 1, 3, 5
    failing = [None, *["engine_error"] * 4]  # record 1 lands, record 3 fails, 5 is held
    osvi_emulator.fault_plan.script(second_session, failing)
    report = tmp_path / "report.jsonl"
    first = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
    assert first.code == 1
    osvi_emulator.fault_plan.script(second_session, ["engine_error"] * 4)  # 3 fails again
    second = await osvi(
        "bulk", str(source), "--report", str(report), "--resume", emulator=osvi_emulator
    )
    assert second.code == 1
    held = last_outcomes(report)[5]
    assert held["held"] is True
    assert held["waiting_for"] == 3
    assert held["error"] == "ItemHeldError"
    assert "Not sent: item 3 of the same session failed first" in held["message"]
