"""Reading bulk input files and writing the per-item report, for `osvi-async bulk`.

Input is JSON Lines (`{"session_id": ..., "context": ...}` per line) or CSV with those two
columns, from a file or stdin. Each *record* (a JSON line, or a CSV row after the header) has
an index from 0; a record that cannot be read becomes a failed item that names its line.

The report is JSON Lines, one object per item, written and flushed as outcomes arrive, so a
crash loses at most the items in flight. `--resume` reads it back and skips every record
whose last report line says `ok`.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Final, Literal

import attrs

from osvi_async import APIStatusError, InjectOutcome, InjectRequest, OsviError

InputFormat = Literal["jsonl", "csv"]

_CSV_COLUMNS: Final = ("session_id", "context")


@attrs.frozen
class Record:
    """One input record: a request, or the reason it could not be read."""

    index: int
    line: int
    request: InjectRequest | None
    problem: str | None = None


def detect_format(path: str, first_line: str) -> InputFormat:
    """JSON Lines unless the name ends in .csv or the first line is a CSV header."""
    if path.lower().endswith(".csv"):
        return "csv"
    header = [cell.strip() for cell in first_line.strip().split(",")]
    return "csv" if header[:2] == list(_CSV_COLUMNS) else "jsonl"


def read_records(lines: Iterable[str], input_format: InputFormat) -> Iterator[Record]:
    """Yield the records of these lines lazily, in order."""
    if input_format == "csv":
        yield from _read_csv(lines)
    else:
        yield from _read_jsonl(lines)


def _read_jsonl(stream: Iterable[str]) -> Iterator[Record]:
    index = 0
    for line_number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        yield _jsonl_record(index, line_number, line)
        index += 1


def _jsonl_record(index: int, line_number: int, line: str) -> Record:
    try:
        value = json.loads(line)
    except ValueError:
        return Record(index, line_number, None, f"line {line_number}: not valid JSON")
    if not isinstance(value, dict):
        return Record(index, line_number, None, f"line {line_number}: expected a JSON object")
    session_id, context = value.get("session_id"), value.get("context")
    if not isinstance(session_id, str) or not isinstance(context, str):
        return Record(
            index,
            line_number,
            None,
            f'line {line_number}: needs string fields "session_id" and "context"',
        )
    return Record(index, line_number, InjectRequest(session_id=session_id, context=context))


def _read_csv(stream: Iterable[str]) -> Iterator[Record]:
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None:
        return
    columns = [cell.strip() for cell in header]
    if not set(_CSV_COLUMNS) <= set(columns):
        yield Record(0, 1, None, 'line 1: the CSV header must name "session_id" and "context"')
        return
    sid_at, context_at = columns.index("session_id"), columns.index("context")
    for index, row in enumerate(reader):
        line_number = reader.line_num
        if len(row) <= max(sid_at, context_at):
            yield Record(index, line_number, None, f"line {line_number}: too few columns")
            continue
        request = InjectRequest(session_id=row[sid_at].strip(), context=row[context_at])
        yield Record(index, line_number, request)


def count_records(path: Path, input_format: InputFormat) -> int:
    """How many records a file holds, for the progress bar's total (one quick pass)."""
    with path.open(encoding="utf-8", newline="") as stream:
        if input_format == "csv":
            return max(0, sum(1 for _ in csv.reader(stream)) - 1)
        return sum(1 for line in stream if line.strip())


def read_done(report: Path) -> bytearray:
    """Indexes whose last report line says ok, as a bitmap (1 bit per record)."""
    done = bytearray()
    if not report.exists():
        return done
    with report.open(encoding="utf-8") as stream:
        for line in stream:
            try:
                entry = json.loads(line)
                index, ok = int(entry["index"]), bool(entry["ok"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash
            if index < 0:
                continue
            byte, bit = divmod(index, 8)
            if byte >= len(done):
                done.extend(bytes(byte - len(done) + 1))
            if ok:
                done[byte] |= 1 << bit
            else:
                done[byte] &= ~(1 << bit) & 0xFF
    return done


def is_done(done: bytearray, index: int) -> bool:
    """Whether the bitmap from `read_done` marks `index` as already successful."""
    byte, bit = divmod(index, 8)
    return byte < len(done) and bool(done[byte] >> bit & 1)


def error_code(error: OsviError | None) -> str | None:
    """A short, stable code for the report: the API's code, else the error class."""
    if error is None:
        return None
    if isinstance(error, APIStatusError) and error.code is not None:
        return error.code
    return type(error).__name__


class ReportWriter:
    """Appends one JSON line per item and flushes it at once."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write_outcome(self, record: Record, outcome: InjectOutcome) -> None:
        """Record how a sent (or refused) item ended."""
        self._write(
            {
                "index": record.index,
                "line": record.line,
                "session_id": record.request.session_id if record.request else None,
                "ok": outcome.ok,
                "attempts": outcome.attempts,
                "possible_duplicate": bool(outcome.result and outcome.result.possible_duplicate),
                "error": error_code(outcome.error),
                "message": str(outcome.error) if outcome.error is not None else None,
            }
        )

    def write_unreadable(self, record: Record) -> None:
        """Record an input line that could not be read as an item."""
        self._write(
            {
                "index": record.index,
                "line": record.line,
                "session_id": None,
                "ok": False,
                "attempts": 0,
                "error": "malformed_input",
                "message": record.problem,
            }
        )

    def _write(self, entry: dict[str, object]) -> None:
        self._stream.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._stream.flush()


def open_text(path: str) -> IO[str]:
    """Open INPUT for reading; `-` is stdin."""
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="")
    return Path(path).open(encoding="utf-8", newline="")
