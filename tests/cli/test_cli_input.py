"""`osvi-async bulk` on hostile or odd input: one line on stderr, never a traceback.

Each case runs the real command as a subprocess against the emulator and checks what the
server saw, the exit code and the report (which must stay valid UTF-8 and JSON).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import sys
from pathlib import Path

import pytest

from osvi_async._config import DEFAULT_MAX_CONTEXT_BYTES
from osvi_async.cli._bulk_io import InputError, _CsvRows, read_records
from osvi_async.testing import OsviEmulator
from tests.cli.test_cli import Completed, assert_clean, osvi


def outcomes(report: Path) -> dict[int, dict[str, object]]:
    """The report's outcome lines by record index (the last one wins); fails if not UTF-8."""
    entries = [json.loads(line) for line in report.read_bytes().decode("utf-8").splitlines()]
    return {e["index"]: e for e in entries if "index" in e and "ok" in e}


def assert_one_line_usage_error(result: Completed, emulator: OsviEmulator, *words: str) -> None:
    """Exit 2, exactly one line on stderr naming `words`, and nothing reached the server."""
    assert result.code == 2, result.err
    [line] = result.err.strip().splitlines()
    assert line.startswith("error: ")
    for word in words:
        assert word in line
    assert emulator.stats.requests_total == 0
    assert_clean(result, emulator.api_token)


def item(session: str, context: str) -> bytes:
    """One JSON Lines record."""
    return json.dumps({"session_id": session, "context": context}).encode() + b"\n"


@pytest.mark.parametrize("from_stdin", [False, True])
async def test_undecodable_lines_are_failed_items(
    osvi_emulator: OsviEmulator, tmp_path: Path, from_stdin: bool
) -> None:
    """Invalid UTF-8 and lone-surrogate escapes fail their own line; the rest is sent."""
    a = osvi_emulator.create_session()
    data = b"".join(
        [
            item(a, "a1"),
            b'{"session_id": "' + a.encode() + b'", "context": "caf\xe9 \xff"}\n',
            item(a, "a2"),
            b'{"session_id": "' + a.encode() + b'", "context": "x\\ud800"}\n',
            b'{"session_id": "\\udc80' + a.encode()[1:] + b'", "context": "y"}\n',
            item(a, "a3"),
        ]
    )
    source = tmp_path / "items.jsonl"
    source.write_bytes(data)
    report = tmp_path / "report.jsonl"
    args = ("bulk", "-" if from_stdin else str(source), "--report", str(report))
    result = await osvi(*args, emulator=osvi_emulator, stdin=data if from_stdin else None)
    assert result.code == 1, result.err
    assert osvi_emulator.applied(a) == ("a1", "a2", "a3")
    assert osvi_emulator.stats.requests_total == 3
    entries = outcomes(report)
    assert [entries[i]["ok"] for i in range(6)] == [True, False, True, False, False, True]
    assert entries[1]["message"] == "line 2: not valid UTF-8"
    assert str(entries[3]["message"]).startswith("line 4: lone surrogate")
    assert str(entries[3]["message"]).endswith("in context")
    assert str(entries[4]["message"]).endswith("in session_id")
    assert {entries[i]["error"] for i in (1, 3, 4)} == {"malformed_input"}
    if not from_stdin:
        assert "6/6" in result.err  # the progress bar's total counts malformed records
    assert "run again with --resume" not in result.err  # malformed records are final
    assert_clean(result, osvi_emulator.api_token)


@pytest.mark.parametrize("input_format", ["jsonl", "csv"])
async def test_binary_file_is_read_as_failed_items(
    osvi_emulator: OsviEmulator, tmp_path: Path, input_format: str
) -> None:
    """A binary file: every record in it fails, the valid ones around it are sent."""
    a = osvi_emulator.create_session()
    noise = random.Random(9).randbytes(64 * 1024).replace(b'"', b"'")  # no quoted fields
    if input_format == "csv":
        data = b"session_id,context\n" + f"{a},first\n".encode() + noise + f"\n{a},last\n".encode()
    else:
        data = item(a, "first") + noise + b"\n" + item(a, "last")
    source = tmp_path / "blob.bin"
    source.write_bytes(data)
    report = tmp_path / "report.jsonl"
    result = await osvi(
        "bulk", str(source), "--format", input_format, "--report", str(report),
        emulator=osvi_emulator,
    )  # fmt: skip
    assert result.code == 1, result.err
    assert osvi_emulator.applied(a) == ("first", "last")
    assert osvi_emulator.stats.requests_total == 2
    entries = outcomes(report)
    failed = [e for e in entries.values() if not e["ok"]]
    assert len(failed) == len(entries) - 2 > 100
    assert all(e["error"] == "malformed_input" for e in failed)
    assert all(re.fullmatch(r"line \d+: .+", str(e["message"])) for e in failed)
    assert f"{len(entries)}/{len(entries)}" in result.err
    assert_clean(result, osvi_emulator.api_token)


@pytest.mark.parametrize("from_stdin", [False, True])
async def test_csv_with_byte_order_mark(
    osvi_emulator: OsviEmulator, tmp_path: Path, from_stdin: bool
) -> None:
    """Excel's "CSV UTF-8" (a BOM before the header) is read like any CSV."""
    a = osvi_emulator.create_session()
    data = b"\xef\xbb\xbfsession_id,context\r\n" + f"{a},caf\u00e9\r\n{a},two\r\n".encode()
    source = tmp_path / "excel.csv"
    source.write_bytes(data)
    args = ("bulk", "-" if from_stdin else str(source))
    result = await osvi(*args, emulator=osvi_emulator, stdin=data if from_stdin else None)
    assert result.code == 0, result.err
    assert osvi_emulator.applied(a) == ("caf\u00e9", "two")
    assert_clean(result, osvi_emulator.api_token)


async def test_csv_rows_with_bytes_that_are_not_utf8(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """A Latin-1 row fails alone; a Latin-1 name of an unused column does not stop the run."""
    a = osvi_emulator.create_session()
    data = b"session_id,context,r\xe9f\n" + f"{a},one,1\n".encode()
    data += f"{a},caf".encode() + b"\xe9,2\n" + f"{a},two,3\n".encode()
    source = tmp_path / "latin1.csv"
    source.write_bytes(data)
    report = tmp_path / "report.jsonl"
    result = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
    assert result.code == 1, result.err
    assert osvi_emulator.applied(a) == ("one", "two")
    assert outcomes(report)[1]["message"] == "line 3: not valid UTF-8"
    assert_clean(result, osvi_emulator.api_token)


async def test_csv_fields_beyond_the_csv_module_default(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """A 512 KiB field (csv's default limit is 128 KiB) is sent; a 1.5 MiB one fails alone."""
    a = osvi_emulator.create_session()
    big, too_big = "b" * (512 * 1024), "c" * (3 * DEFAULT_MAX_CONTEXT_BYTES // 2)
    source = tmp_path / "big.csv"
    source.write_text(f'session_id,context\n{a},"{big}"\n{a},"{too_big}"\n{a},after\n')
    report = tmp_path / "report.jsonl"
    result = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
    assert result.code == 1, result.err
    assert osvi_emulator.applied(a) == (big, "after")
    entries = outcomes(report)
    assert (entries[1]["ok"], entries[1]["line"], entries[1]["error"]) == (
        False,
        3,
        "ClientValidationError",
    )
    assert "max_context_bytes" in str(entries[1]["message"])
    assert_clean(result, osvi_emulator.api_token)


async def test_oversized_quoted_field_does_not_leak_rows(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """Lines inside an over-long quoted field are never sent as rows; the next row is."""
    a = osvi_emulator.create_session()
    inner = f"{a},inside\n" * 60_000  # ~2.6 M characters, past the record limit
    source = tmp_path / "huge.csv"
    source.write_text(f'session_id,context\n{a},before\n{a},"{inner}"\n{a},after\n')
    report = tmp_path / "report.jsonl"
    result = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
    assert result.code == 1, result.err
    assert osvi_emulator.applied(a) == ("before", "after")
    assert osvi_emulator.stats.requests_total == 2
    entries = outcomes(report)
    assert len(entries) == 3
    assert str(entries[1]["message"]).startswith("line 3: longer than ")
    assert entries[2]["line"] == 60_004
    assert "3/3" in result.err
    assert_clean(result, osvi_emulator.api_token)


def test_reader_keeps_a_field_of_max_context_bytes() -> None:
    """A CSV field and a JSON context of exactly max_context_bytes become requests intact."""
    context = "\u00e9" * (DEFAULT_MAX_CONTEXT_BYTES // 2)  # 2 UTF-8 bytes each
    sid = "4718a326-417b-4dda-90d0-21fd65a11cb8"
    quoted = context.replace("\u00e9", '"', 1)  # a doubled quote costs one more character
    csv_lines = ["session_id,context\n", f'{sid},"{quoted.replace(chr(34), chr(34) * 2)}"\n']
    jsonl_lines = [json.dumps({"session_id": sid, "context": context}) + "\n"]  # \u escapes
    for lines, input_format, expected in (
        (csv_lines, "csv", quoted),
        (jsonl_lines, "jsonl", context),
    ):
        [record] = read_records(lines, input_format, max_context_bytes=DEFAULT_MAX_CONTEXT_BYTES)  # type: ignore[arg-type]
        assert record.problem is None
        assert record.request is not None
        assert record.request.context == expected


def test_reader_refuses_a_bad_csv_header_at_once() -> None:
    """A header without both columns raises before any record is read."""
    with pytest.raises(InputError, match="session_id"):
        read_records(iter(["id,text\n", "x,y\n"]), "csv", max_context_bytes=1024)


async def test_csv_header_without_the_columns_exits_2(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """A CSV header that does not name session_id and context: exit 2, nothing sent."""
    a = osvi_emulator.create_session()
    source = tmp_path / "items.csv"
    source.write_text(f"id,text\n{a},x\n")
    result = await osvi("bulk", str(source), emulator=osvi_emulator)
    assert_one_line_usage_error(result, osvi_emulator, "header", "session_id")


async def test_csv_header_naming_a_column_twice_exits_2(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """A CSV header naming a column twice (which one is the address?): exit 2, nothing sent."""
    a = osvi_emulator.create_session()
    source = tmp_path / "items.csv"
    source.write_text(f"session_id,context,session_id\n{a},x,{a}\n")
    result = await osvi("bulk", str(source), emulator=osvi_emulator)
    assert_one_line_usage_error(result, osvi_emulator, "header", '"session_id" more than once')


async def test_unusable_input_paths_exit_2(osvi_emulator: OsviEmulator, tmp_path: Path) -> None:
    """A directory, a missing file, a path through a file and a FIFO: exit 2, nothing sent."""
    regular = tmp_path / "file.jsonl"
    regular.write_bytes(item(osvi_emulator.create_session(), "x"))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # so opening it to read never blocks
    try:
        for path, words in (
            (tmp_path, ("is a directory",)),
            (tmp_path / "missing.jsonl", ("no such input file",)),
            (regular / "under-a-file.jsonl", ("cannot read", "Not a directory")),
            (fifo, ("not a regular file",)),
        ):
            result = await osvi("bulk", str(path), emulator=osvi_emulator)
            assert_one_line_usage_error(result, osvi_emulator, *words)
    finally:
        os.close(writer)


async def test_unwritable_report_exits_2(osvi_emulator: OsviEmulator, tmp_path: Path) -> None:
    """A report path that is a directory, or under a missing dir or a file: exit 2, nothing sent."""
    source = tmp_path / "items.jsonl"
    source.write_bytes(item(osvi_emulator.create_session(), "x"))
    for report in (tmp_path, tmp_path / "missing" / "r.jsonl", source / "r.jsonl"):
        result = await osvi("bulk", str(source), "--report", str(report), emulator=osvi_emulator)
        assert_one_line_usage_error(result, osvi_emulator, "report")


async def test_serve_help_lists_the_emulator_options() -> None:
    """`osvi-async serve --help` and `python -m osvi_async.testing --help` name the same options."""

    async def help_text(*command: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command, "--help", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0
        return out.decode()

    serve = await help_text("-m", "osvi_async.cli", "serve")
    testing = await help_text("-m", "osvi_async.testing")
    options = set(re.findall(r"--[a-z][a-z-]+", serve))
    assert options == set(re.findall(r"--[a-z][a-z-]+", testing))
    assert {"--port", "--token", "--fail-rate", "--fail-kind", "--latency-ms"} <= options
    assert serve.startswith("usage: osvi-async serve")


def test_shrunk_lines_end_csv_records_where_the_originals_do() -> None:
    """Past the size limit, lines are shortened without moving any record boundary."""
    rng = random.Random(3)
    pieces = ["a", "bc", ",", '"', '""', '"""', " ", "\n", "\r\n", "\r"]
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 80)))
        lines = text.splitlines(keepends=True)
        boundaries = []
        for limit in (10**9, 0):  # never shrink, always shrink
            rows = list(_CsvRows(lines, limit))
            boundaries.append([first for first, _, _ in rows])
        assert boundaries[0] == boundaries[1], text


async def test_a_fifo_as_input_is_refused_without_hanging(
    osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """A FIFO as INPUT (no writer on the other end): exit 2 at once, one line, nothing sent."""
    fifo = tmp_path / "input.fifo"
    os.mkfifo(fifo)
    result = await osvi("bulk", str(fifo), emulator=osvi_emulator)
    assert_one_line_usage_error(result, osvi_emulator, "not a regular file", str(fifo))


@pytest.mark.parametrize("from_stdin", [False, True])
async def test_an_over_long_json_line_fails_alone(
    osvi_emulator: OsviEmulator, tmp_path: Path, from_stdin: bool
) -> None:
    """A JSON line longer than any record may be (first or later) fails alone; the rest is sent."""
    a = osvi_emulator.create_session()
    huge = item(a, "x" * (7 * DEFAULT_MAX_CONTEXT_BYTES))  # past 6 x max_context_bytes
    data = huge + item(a, "a1") + huge + item(a, "a2")
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    source.write_bytes(data)
    args = ("bulk", "-" if from_stdin else str(source), "--report", str(report))
    result = await osvi(*args, emulator=osvi_emulator, stdin=data if from_stdin else None)
    assert result.code == 1, result.err
    assert osvi_emulator.applied(a) == ("a1", "a2")
    entries = outcomes(report)
    assert [entries[i]["ok"] for i in range(4)] == [False, True, False, True]
    assert str(entries[0]["message"]).startswith("line 1: longer than ")
    assert str(entries[2]["message"]).startswith("line 3: longer than ")
    if not from_stdin:
        assert "4/4" in result.err
    assert_clean(result, osvi_emulator.api_token)


@pytest.mark.parametrize("from_stdin", [False, True])
async def test_deeply_nested_json_lines_fail_alone(
    osvi_emulator: OsviEmulator, tmp_path: Path, from_stdin: bool
) -> None:
    """JSON nested deeper than the parser can recurse fails its own line; the rest is sent."""
    a = osvi_emulator.create_session()
    deep = "[" * 100_000 + "]" * 100_000
    nested_extra = f'{{"session_id": "{a}", "context": "x", "extra": {deep}}}\n'
    data = item(a, "a1") + deep.encode() + b"\n" + item(a, "a2") + nested_extra.encode()
    data += item(a, "a3")
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    source.write_bytes(data)
    args = ("bulk", "-" if from_stdin else str(source), "--report", str(report))
    result = await osvi(*args, emulator=osvi_emulator, stdin=data if from_stdin else None)
    assert result.code == 1, result.err
    assert osvi_emulator.applied(a) == ("a1", "a2", "a3")
    entries = outcomes(report)
    assert [entries[i]["ok"] for i in range(5)] == [True, False, True, False, True]
    assert entries[1]["message"] == "line 2: nested too deeply"
    assert entries[3]["message"] == "line 4: nested too deeply"
    assert entries[3]["error"] == "malformed_input"
    assert "3 ok, 2 failed" in result.err
    if not from_stdin:
        assert "5/5" in result.err
    assert_clean(result, osvi_emulator.api_token)


@pytest.mark.parametrize("from_stdin", [False, True])
async def test_csv_quote_never_closed_is_a_failed_item(
    osvi_emulator: OsviEmulator, tmp_path: Path, from_stdin: bool
) -> None:
    """A quote open at the end of the input fails the record it starts, naming its line."""
    a = osvi_emulator.create_session()
    data = f'session_id,context\n{a},first\n{a},"never closed\n{a},next\n'.encode()
    source, report = tmp_path / "items.csv", tmp_path / "report.jsonl"
    source.write_bytes(data)
    args = ("bulk", "-" if from_stdin else str(source), "--format", "csv", "--report", str(report))
    result = await osvi(*args, emulator=osvi_emulator, stdin=data if from_stdin else None)
    assert result.code == 1, result.err
    assert osvi_emulator.applied(a) == ("first",)
    assert osvi_emulator.stats.requests_total == 1
    entries = outcomes(report)
    assert sorted(entries) == [0, 1]
    assert (entries[1]["error"], entries[1]["line"]) == ("malformed_input", 3)
    assert entries[1]["message"] == (
        "line 3: a quoted field is never closed (unexpected end of data)"
    )
    if not from_stdin:
        assert "2/2" in result.err
    assert_clean(result, osvi_emulator.api_token)


def test_reader_reports_an_oversized_field_never_closed() -> None:
    """An unclosed quoted field past the size limit is one failed record, not a leak of rows."""
    lines = ["session_id,context\n", 's,"' + "x" * 100_000 + "\n"] + ["s,row\n"] * 1000
    records = list(read_records(lines, "csv", max_context_bytes=10))
    [record] = records
    assert record.request is None
    assert record.problem == "line 2: a quoted field is never closed (unexpected end of data)"


@pytest.mark.parametrize("from_stdin", [False, True])
async def test_blank_csv_lines_are_skipped(
    osvi_emulator: OsviEmulator, tmp_path: Path, from_stdin: bool
) -> None:
    """Blank CSV lines (LF, CRLF, trailing) are no records: exit 0, indexes and totals agree."""
    a = osvi_emulator.create_session()
    data = f"session_id,context\r\n\r\n{a},one\r\n\r\n  \r\n{a},two\r\n\r\n\n".encode()
    source, report = tmp_path / "items.csv", tmp_path / "report.jsonl"
    source.write_bytes(data)
    args = ("bulk", "-" if from_stdin else str(source), "--report", str(report))
    if from_stdin:
        args += ("--format", "csv")
    result = await osvi(*args, emulator=osvi_emulator, stdin=data if from_stdin else None)
    assert result.code == 0, result.err
    assert osvi_emulator.applied(a) == ("one", "two")
    entries = outcomes(report)
    assert [(i, e["ok"], e["line"]) for i, e in sorted(entries.items())] == [
        (0, True, 3),
        (1, True, 6),
    ]
    header = json.loads(report.read_text().splitlines()[0])
    if from_stdin:
        assert header["input"] is None
    else:
        assert header["input"]["records"] == 2
        assert "2/2" in result.err
    assert "2 ok, 0 failed" in result.err
    assert_clean(result, osvi_emulator.api_token)


def test_reader_keeps_a_quoted_empty_field_as_a_record() -> None:
    """A line holding `""` is a record (too few columns), not a blank line."""
    records = list(
        read_records(["session_id,context\n", '""\n', "s,c\n"], "csv", max_context_bytes=10)
    )
    assert [(r.index, r.line, r.problem) for r in records] == [
        (0, 2, "line 2: too few columns"),
        (1, 3, None),
    ]
