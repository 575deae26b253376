"""The bulk report: a crash-safe journal of one input's items, and what `--resume` reads back.

The report is JSON Lines, one object per line, appended with one `write` per line on an
unbuffered file, so a kill (even SIGKILL) tears at most the last line:

- a header, first: `{"osvi_async_report": 1, "input": {"sha256", "bytes", "records"}}`, or
  `"input": null` when the input was stdin, which cannot be checked before sending;
- an *intent* line `{"index": i, "sending": true}` right before item i's first byte goes out,
  so a report that ends without i's outcome says "i may have been applied";
- an *outcome* line per item: `index`, `line`, `session_id`, `ok`, `attempts`, `error`,
  `message`, `possible_duplicate`, `may_have_been_applied`, `refused_for_good`, and for an
  item held behind an earlier failure of its session `held: true` and `waiting_for` (the
  record index it waits for).

`read_report` folds the lines back into three facts per record index: *done* (its last
outcome is ok), *final* (its last outcome failed in a way a resend would repeat) and *maybe
applied* (an intent without a later outcome, or an outcome with `may_have_been_applied`,
sticky until an ok line). A torn or undecodable last line is cut off and warned about.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Final

import attrs

from osvi_async import APIStatusError, InjectOutcome, OsviError

REPORT_VERSION: Final = 1
MALFORMED_INPUT: Final = "malformed_input"
"""The `error` of an input record that could not be read as an item."""

_CHUNK: Final = 1 << 20


@attrs.frozen
class InputIdentity:
    """Which input a report belongs to: its SHA-256, its size and its record count."""

    sha256: str
    bytes: int
    records: int

    def as_json(self) -> dict[str, object]:
        """The header's `input` value."""
        return {"sha256": self.sha256, "bytes": self.bytes, "records": self.records}


class _HashingReader(io.RawIOBase):
    """A binary file seen through a SHA-256: every byte read is hashed and counted."""

    def __init__(self, raw: io.BufferedIOBase) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        count = len(data)
        buffer[:count] = data
        self.digest.update(data)
        self.size += count
        return count


def identify_input(path: Path, count: Callable[[IO[str]], int]) -> InputIdentity:
    """Hash a file and count its records (for the progress bar) in one pass.

    `count` reads the text (UTF-8, a leading BOM skipped, undecodable bytes escaped, as the
    run itself reads it) and returns how many records it holds. Whatever it leaves unread is
    hashed too.

    Raises:
        OSError: The file cannot be read.
    """
    with path.open("rb") as raw:
        hashing = _HashingReader(raw)
        buffered = io.BufferedReader(hashing, buffer_size=_CHUNK)
        text = io.TextIOWrapper(
            buffered, encoding="utf-8-sig", errors="surrogateescape", newline=""
        )
        records = count(text)
        while buffered.read(_CHUNK):
            pass
        return InputIdentity(hashing.digest.hexdigest(), hashing.size, records)


def error_code(error: OsviError | None) -> str | None:
    """A short, stable code for the report: the API's code, else the error class."""
    if error is None:
        return None
    if isinstance(error, APIStatusError) and error.code is not None:
        return error.code
    return type(error).__name__


class ReportWriter:
    """Appends one JSON line per event to the report, each in one unbuffered write.

    Text that is not valid Unicode (a lone surrogate in a session id or message) is written
    as a JSON `\\uXXXX` escape, so the file stays valid UTF-8 and JSON.
    """

    def __init__(self, path: Path) -> None:
        """Open `path` for appending.

        Raises:
            OSError: The report cannot be opened for writing.
        """
        self._file = path.open("ab", buffering=0)

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._file.close()

    @property
    def empty(self) -> bool:
        """Whether nothing was written to the file yet (then it needs a header)."""
        return self._file.tell() == 0

    def write_header(self, identity: InputIdentity | None) -> None:
        """Record which input this report belongs to (None: stdin, not checkable)."""
        self._write(
            {
                "osvi_async_report": REPORT_VERSION,
                "input": identity.as_json() if identity is not None else None,
            }
        )

    def write_intent(self, index: int) -> None:
        """Record that record `index` is about to be sent for the first time in this run."""
        self._write({"index": index, "sending": True})

    def write_outcome(
        self,
        *,
        index: int,
        line: int,
        session_id: str | None,
        outcome: InjectOutcome,
        refused_for_good: bool,
        waiting_for: int | None,
    ) -> None:
        """Record how a sent (or held, or stopped) item ended."""
        error = outcome.error
        entry: dict[str, object] = {
            "index": index,
            "line": line,
            "session_id": session_id,
            "ok": outcome.ok,
            "attempts": outcome.attempts,
            "error": error_code(error),
            "message": str(error) if error is not None else None,
            "possible_duplicate": bool(outcome.result and outcome.result.possible_duplicate),
            "may_have_been_applied": bool(error is not None and error.may_have_been_applied),
            "refused_for_good": refused_for_good,
        }
        if waiting_for is not None:
            entry["held"] = True
            entry["waiting_for"] = waiting_for
        self._write(entry)

    def write_unreadable(self, *, index: int, line: int, problem: str | None) -> None:
        """Record an input record that could not be read as an item (never resent)."""
        self._write(
            {
                "index": index,
                "line": line,
                "session_id": None,
                "ok": False,
                "attempts": 0,
                "error": MALFORMED_INPUT,
                "message": problem,
                "possible_duplicate": False,
                "may_have_been_applied": False,
                "refused_for_good": True,
            }
        )

    def _write(self, entry: dict[str, object]) -> None:
        data = (json.dumps(entry, ensure_ascii=False) + "\n").encode(
            "utf-8", errors="backslashreplace"
        )
        view = memoryview(data)
        while view:  # a raw write may take less than all of it (rare: signals, full pipes)
            written = self._file.write(view)
            view = view[written or 0 :]


def _set(bitmap: bytearray, index: int, value: bool) -> None:
    byte, bit = divmod(index, 8)
    if byte >= len(bitmap):
        if not value:
            return
        bitmap.extend(bytes(byte - len(bitmap) + 1))
    if value:
        bitmap[byte] |= 1 << bit
    else:
        bitmap[byte] &= ~(1 << bit) & 0xFF


def _get(bitmap: bytearray, index: int) -> bool:
    byte, bit = divmod(index, 8)
    return byte < len(bitmap) and bool(bitmap[byte] >> bit & 1)


@attrs.define
class ReportState:
    """What a report says about each record index (bitmaps: one bit per record)."""

    exists: bool = False
    has_header: bool = False
    input: dict[str, object] | None = None
    done: bytearray = attrs.field(factory=bytearray)
    final: bytearray = attrs.field(factory=bytearray)
    maybe_applied: bytearray = attrs.field(factory=bytearray)
    pending: bytearray = attrs.field(factory=bytearray)
    warnings: list[str] = attrs.field(factory=list)

    def is_done(self, index: int) -> bool:
        """The record's last outcome is ok: skip it."""
        return _get(self.done, index)

    def is_final(self, index: int) -> bool:
        """The record failed in a way a resend would repeat: do not resend it."""
        return _get(self.final, index)

    def may_have_been_applied(self, index: int) -> bool:
        """An earlier send of the record may have applied it, and none succeeded since."""
        return _get(self.maybe_applied, index) or _get(self.pending, index)

    def settled(self, records: int) -> tuple[int, int]:
        """How many of the first `records` indexes are (done, final)."""
        done = final = 0
        for index in range(records):
            if _get(self.done, index):
                done += 1
            elif _get(self.final, index):
                final += 1
        return done, final

    def problem_with(self, identity: InputIdentity | None) -> str | None:
        """Why this report cannot be used with this input, or None if it can."""
        if not self.has_header:
            return "has no osvi-async report header (another file, or an older version's)"
        if identity is None:
            return "cannot be checked against stdin; resume from the input file instead"
        if self.input is None:
            return "was written for stdin, which cannot be checked; start a new report"
        if self.input.get("sha256") != identity.sha256:
            return "was written for another input (its SHA-256 differs)"
        return None

    def fold(self, entry: dict[str, object]) -> bool:
        """Fold one line in; False if it is not a line of ours."""
        if "osvi_async_report" in entry:
            if self.has_header or entry.get("osvi_async_report") != REPORT_VERSION:
                return False
            self.has_header = True
            value = entry.get("input")
            self.input = value if isinstance(value, dict) else None
            return True
        index = entry.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            return False
        if entry.get("sending") is True:
            _set(self.pending, index, True)
            return True
        ok = entry.get("ok")
        if not isinstance(ok, bool):
            return False
        _set(self.pending, index, False)
        _set(self.done, index, ok)
        final = not ok and (
            entry.get("refused_for_good") is True or entry.get("error") == MALFORMED_INPUT
        )
        _set(self.final, index, final)
        if ok:
            _set(self.maybe_applied, index, False)
        elif entry.get("may_have_been_applied") is True:
            _set(self.maybe_applied, index, True)
        return True


def _parse(raw: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        return None
    return value if isinstance(value, dict) else None


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(offset, line) for each line, the last one without its newline if it has none."""
    offset = 0
    with path.open("rb") as stream:
        for line in stream:
            yield offset, line
            offset += len(line)


def read_report(path: Path) -> ReportState:
    """Read a report for `--resume`, repairing a torn tail (the file is cut back).

    A last line that is incomplete (no newline) or unreadable (bad JSON or UTF-8) is what a
    kill mid-write leaves: it is cut off so it is neither resent forever nor read again, with
    a warning. Unreadable lines before it are skipped with one warning.

    Raises:
        OSError: The report exists but cannot be read or repaired.
    """
    state = ReportState()
    if not path.exists():
        return state
    state.exists = True
    bad: list[int] = []
    last: tuple[int, int, bool] | None = None  # (line number, offset, readable) of the last
    for number, (offset, raw) in enumerate(_lines(path), start=1):
        entry = _parse(raw) if raw.endswith(b"\n") else None
        readable = entry is not None and state.fold(entry)
        if not readable:
            bad.append(number)
        last = (number, offset, readable)
    if last is not None and not last[2]:
        number, offset, _ = last
        bad.pop()
        with path.open("r+b") as stream:
            stream.truncate(offset)
            os.fsync(stream.fileno())
        state.warnings.append(
            f"warning: {path}: removed its torn last line ({number}), left by a stop mid-write"
        )
    if bad:
        shown = ", ".join(str(n) for n in bad[:5]) + (", ..." if len(bad) > 5 else "")
        state.warnings.append(
            f"warning: {path}: skipped {len(bad)} unreadable line(s) in the middle: {shown}"
        )
    return state
