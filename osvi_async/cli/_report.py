"""The bulk report: a crash-safe journal of one input's items, and what `--resume` reads back.

The report is JSON Lines, one object per line, appended with one `write` per line on an
unbuffered file, so a kill (even SIGKILL) tears at most the last line:

- a header, first: `{"osvi_async_report": 1, "input": {"sha256", "bytes", "records"}}`, or
  `"input": null` when the input was stdin, which cannot be checked before sending;
- an *intent* line `{"index": i, "sending": true}` right before item i's first byte goes out,
  so a report that ends without i's outcome says "i may have been applied";
- an *outcome* line per item: `index`, `line`, `session_id`, `ok`, `attempts`, `error`,
  `message`, `possible_duplicate`, `may_have_been_applied`, `refused_for_good`, for an item
  addressed by customer `customer_id` and `agent_uuid` (its `session_id` is the session the
  entry went to, null unless it is ok), and for an item held behind an earlier failure of
  its session (or customer) `held: true` and `waiting_for` (the record index it waits for).

`read_report` folds the lines back into three facts per record index: *done* (its last
outcome is ok), *final* (its last outcome failed in a way a resend would repeat) and *maybe
applied* (an intent without a later outcome, or an outcome with `may_have_been_applied`,
sticky until an ok line).

`open_report` is the only way a run opens a report, and it writes nothing until the file is
proven ours and usable: it must be a regular file (or not exist), it is locked for the whole
run (`flock`, so two runs never journal into one report; the kernel drops the lock when the
process dies, SIGKILL included), it is read without being modified, its header must match
the input and `--resume` must be given for a report that already holds a run. Only then is a
torn last line cut off, or a whole last line's missing newline added (with a warning), and,
for a new report, the header written.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO, Final

import attrs

from osvi_async import APIStatusError, InjectOutcome, OsviError
from osvi_async.cli._bulk_io import decode_input

REPORT_VERSION: Final = 1
MALFORMED_INPUT: Final = "malformed_input"
"""The `error` of an input record that could not be read as an item."""

_CHUNK: Final = 1 << 20
_HEADER_LIMIT: Final = 64 * 1024  # far longer than any header we write
_HEADER_PREFIX: Final = b'{"osvi_async_report": '


class ReportError(Exception):
    """The report cannot be used for this run; one line for the user (exit 2, nothing sent)."""


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

    def __init__(self, raw: IO[bytes]) -> None:
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


def identify_input(raw: IO[bytes], count: Callable[[IO[str]], int]) -> InputIdentity:
    """Hash a file opened in binary and count its records (for the progress bar) in one pass.

    `count` reads the text (UTF-8, a leading BOM skipped, undecodable bytes escaped, as the
    run itself reads it) and returns how many records it holds. Whatever it leaves unread is
    hashed too.

    Raises:
        OSError: The file cannot be read.
    """
    with raw:
        hashing = _HashingReader(raw)
        buffered = io.BufferedReader(hashing, buffer_size=_CHUNK)
        # Kept in a name: a text wrapper that is collected closes the buffer under it, and
        # what `count` left unread is still to be hashed below.
        text = decode_input(buffered)
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

    A write that fails (a full disk: ENOSPC) does not raise: it is kept in `failure`, every
    later line is dropped and `on_failure` is called once, so the run can stop at once. What
    the report already holds still errs on the safe side: an item whose intent line is in it
    and whose outcome line is missing counts as "may have been applied" on `--resume`.
    """

    def __init__(self, file: io.RawIOBase) -> None:
        """Write to `file`, an unbuffered binary file opened for appending (see `open_report`)."""
        self._file = file
        self.failure: OSError | None = None
        """The first write that failed, or None."""
        self.on_failure: Callable[[], None] | None = None
        """Called once, right after the first write that failed (to stop the run)."""

    def close(self) -> None:
        """Close the file, which also releases the run's lock on it (idempotent)."""
        self._file.close()

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
        customer: tuple[str, str] | None = None,
        concurrency_limit: int | None = None,
    ) -> None:
        """Record how a sent (or held, or stopped) item ended.

        `customer` is the (customer_id, agent_uuid) of an item addressed by customer; its
        `session_id` is then the session the entry went to, when it is known (ok items).
        `concurrency_limit`, in a `--concurrency auto` run, is the adaptive limit when the
        item ended, so the report shows how the limit moved.
        """
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
        if customer is not None:
            entry["customer_id"], entry["agent_uuid"] = customer
        if waiting_for is not None:
            entry["held"] = True
            entry["waiting_for"] = waiting_for
        if concurrency_limit is not None:
            entry["concurrency_limit"] = concurrency_limit
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
        if self.failure is not None:
            return
        data = (json.dumps(entry, ensure_ascii=False) + "\n").encode(
            "utf-8", errors="backslashreplace"
        )
        view = memoryview(data)
        try:
            while view:  # a raw write may take less than all of it (rare: signals, full pipes)
                written = self._file.write(view)
                view = view[written or 0 :]
        except OSError as error:
            self.failure = error
            if self.on_failure is not None:
                self.on_failure()


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

    empty: bool = True
    has_header: bool = False
    input: dict[str, object] | None = None
    done: bytearray = attrs.field(factory=bytearray)
    final: bytearray = attrs.field(factory=bytearray)
    maybe_applied: bytearray = attrs.field(factory=bytearray)
    pending: bytearray = attrs.field(factory=bytearray)
    warnings: list[str] = attrs.field(factory=list)
    torn_at: int | None = None
    """Where a torn or unreadable last line starts (the file is cut back there), or None."""
    torn_line: int = 0
    unterminated_line: int = 0
    """A whole last line of ours that lacks only its newline (added on repair), or 0."""

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

    def problem_with(self, identity: InputIdentity | None, *, resume: bool) -> str | None:
        """Why this report cannot be used for this run, or None if it can."""
        if self.empty:
            return None
        written_for = self.input.get("sha256") if self.input is not None else None
        problems = (
            (not self.has_header, "is not an osvi-async report (its first line is not a header)"),
            (identity is None, "already holds a run, and stdin cannot be checked against it"),
            (self.input is None, "was written for stdin, which cannot be checked against INPUT"),
            (
                identity is not None and written_for != identity.sha256,
                "was written for another input (its SHA-256 differs)",
            ),
        )
        for found, problem in problems:
            if found:
                return f"{problem}; choose another --report path"
        if not resume:
            return (
                "already holds a run of this input; add --resume to continue it, "
                "or choose another --report path"
            )
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
    except RecursionError:  # nested deeper than json's parser can recurse: not ours
        return None
    return value if isinstance(value, dict) else None


def read_report(stream: IO[bytes]) -> ReportState:
    """Read a report from the start of `stream`, without changing it.

    The first line must be our header; if it is not, reading stops there (`has_header` is
    False) so a file that is not a report is neither read through nor touched. A last line
    that is incomplete (no newline) or unreadable (bad JSON or UTF-8) is what a kill
    mid-write leaves: its offset is kept in `torn_at` for `open_report` to cut off. A last
    line that is whole and ours but lacks its newline is kept (`unterminated_line`, for
    `open_report` to add the newline). A file holding only the start of a header is torn
    at 0, that is, empty. Unreadable lines
    before the last one are skipped with one warning.
    """
    state = ReportState()
    first = stream.readline(_HEADER_LIMIT)
    if not first:
        return state
    state.empty = False
    header = _parse(first)
    if not first.endswith(b"\n"):
        if stream.read(1):
            return state  # a first line longer than any header: not ours
        if header is not None and "osvi_async_report" in header:
            if state.fold(header):
                state.unterminated_line = 1  # a whole header: only its newline is missing
        elif first.startswith(_HEADER_PREFIX):
            state.empty, state.torn_at, state.torn_line = True, 0, 1
        return state
    if header is None or "osvi_async_report" not in header or not state.fold(header):
        return state
    bad: list[int] = []
    offset = len(first)
    last: tuple[int, int, bool] | None = None  # (line number, offset, readable) of the last
    for number, raw in enumerate(stream, start=2):
        # Only the last line can lack its newline. Every line of ours ends in "}", so one
        # that parses as ours was written whole: it is kept, and its newline added.
        entry = _parse(raw)
        readable = entry is not None and state.fold(entry)
        if not readable:
            bad.append(number)
        elif not raw.endswith(b"\n"):
            state.unterminated_line = number
        last = (number, offset, readable)
        offset += len(raw)
    if last is not None and not last[2]:
        state.torn_line, state.torn_at, _ = last
        bad.pop()
    if bad:
        shown = ", ".join(str(n) for n in bad[:5]) + (", ..." if len(bad) > 5 else "")
        state.warnings.append(f"skipped {len(bad)} unreadable line(s) in the middle: {shown}")
    return state


def open_locked(path: Path, command: str = "bulk") -> int:
    """Open (or create) `path` for appending, refuse anything but a regular file, lock it.

    `command` names the kind of run that holds the lock, for the message when another does.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)  # O_NONBLOCK: a FIFO must not hang the open
    except OSError as error:
        raise ReportError(f"cannot use the report {path}: {error.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ReportError(f"the report {path} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReportError(
                f"the report {path} is in use by another osvi-async {command} run"
            ) from None
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_report(
    path: Path, identity: InputIdentity | None, *, resume: bool
) -> tuple[ReportState, ReportWriter]:
    """Open, lock, read and check the report; only then repair its tail or write its header.

    Returns what the report says (empty for a new report) and its writer, which holds the
    lock until it is closed. Warnings for the user (a torn tail cut off, lines skipped) are
    in the state's `warnings`, each one line starting with "warning: ".

    Raises:
        ReportError: The report is not a regular file, is locked by another run, is not
            ours, belongs to another input or already holds a run and `resume` is False,
            or cannot be read or written. Nothing was written to it.
    """
    fd = open_locked(path)
    file = os.fdopen(fd, "r+b", buffering=0)
    try:
        with os.fdopen(fd, "rb", closefd=False) as stream:
            state = read_report(stream)
        problem = state.problem_with(identity, resume=resume)
        if problem is not None:
            raise ReportError(f"the report {path} {problem}")
        if state.torn_at is not None:
            os.ftruncate(fd, state.torn_at)
            os.fsync(fd)
            state.warnings.insert(
                0, f"removed its torn last line ({state.torn_line}), left by a stop mid-write"
            )
        elif state.unterminated_line:
            os.write(fd, b"\n")  # appended (O_APPEND): the line itself stays as it is
            os.fsync(fd)
            state.warnings.insert(
                0, f"added the missing newline to its last line ({state.unterminated_line})"
            )
        writer = ReportWriter(file)
        if state.empty:
            writer.write_header(identity)
    except OSError as error:
        file.close()
        raise ReportError(f"cannot use the report {path}: {error.strerror}") from None
    except BaseException:
        file.close()
        raise
    state.warnings = [f"warning: {path}: {warning}" for warning in state.warnings]
    return state, writer
