"""Reading bulk input files, for `osvi-async bulk` (the report is in `_report`).

Input is JSON Lines (`{"session_id": ..., "context": ...}` per line) or CSV with those two
columns, from a file or stdin. Instead of `session_id`, an item may name `customer_id` and
`agent_uuid`: it becomes a `CustomerInjectRequest`, whose session the SDK resolves (the
customer's active session with that agent) and whose input order per customer and agent it
keeps. An item naming both a session and a customer, or only one of `customer_id` and
`agent_uuid`, is malformed. Each *record* (a non-blank JSON line, or a CSV row after the
header) has an index from 0; a record that cannot be read becomes a failed item that names its
line, and the records after it are still read. Only input that cannot be read at all (not a
file, or a CSV header without the two columns) raises `InputError`, before anything is sent.

Bytes that are not UTF-8 never stop a run: text is decoded with `surrogateescape`, so each
undecodable byte becomes a lone surrogate that marks its record as malformed. A JSON escape
such as `\\ud800` that decodes to a lone surrogate is malformed too. Either way no string that
cannot be encoded as UTF-8 is handed on as a request, so the report stays valid UTF-8.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Final, Literal

import attrs

from osvi_async import CustomerInjectRequest, InjectRequest

InputFormat = Literal["jsonl", "csv"]
Request = InjectRequest | CustomerInjectRequest

_CSV_COLUMNS: Final = ("session_id", "context")
_CUSTOMER_COLUMNS: Final = ("customer_id", "agent_uuid")
_NEEDS: Final = (
    'needs a JSON object with a string "context" and a string "session_id", '
    'or strings "customer_id" and "agent_uuid"'
)
_BOTH: Final = "names a session_id and a customer_id/agent_uuid: give one or the other"
_HALF: Final = "customer_id and agent_uuid go together: give both"
_ENCODING: Final = "utf-8-sig"  # UTF-8; a leading byte order mark (Excel's "CSV UTF-8") is skipped
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_SLACK_CHARS: Final = 64 * 1024  # room for the session id, other columns and syntax
# csv's own limit (128 Ki characters by default) is lifted: after its "field larger than
# field limit" error, csv resumes at the next physical line even inside a quoted field, so
# the rest of that field would be read as records. _CsvRows bounds record sizes instead.
_CSV_FIELD_LIMIT: Final = 2**31 - 1  # a C long on every platform
# What moves csv's state machine (excel dialect): quotes, line ends, and whether a run of
# other characters starts or ends with a comma. See _shrink.
_PLAIN_RUN: Final = re.compile('[^"\r\n]+')
_QUOTE_RUN: Final = re.compile('"{4,}')


_UNCLOSED: Final = "a quoted field is never closed (unexpected end of data)"


class InputError(Exception):
    """INPUT cannot be read at all; the command stops before sending anything (exit 2)."""


@attrs.frozen
class Record:
    """One input record: a request, or the reason it could not be read."""

    index: int
    line: int
    request: Request | None
    problem: str | None = None


def max_record_chars(input_format: InputFormat, max_context_bytes: int) -> int:
    """The longest record that can hold a context of `max_context_bytes` UTF-8 bytes.

    A character takes at least one UTF-8 byte; JSON may spell one byte as six characters
    (`\\u0001`), CSV as two (a doubled quote). Longer records are failed items, never read
    into a request, so one huge record cannot exhaust memory or reach the client.
    """
    per_byte = 2 if input_format == "csv" else 6
    return per_byte * max_context_bytes + _SLACK_CHARS


def detect_format(path: str, first_line: str) -> InputFormat:
    """JSON Lines unless the name ends in .csv or the first line is a CSV header."""
    if path.lower().endswith(".csv"):
        return "csv"
    header = [cell.strip().strip('"').strip() for cell in first_line.strip().split(",")]
    return "csv" if _usable_header(header) else "jsonl"


def _usable_header(columns: list[str]) -> bool:
    """A header naming `context` and `session_id`, or `customer_id` and `agent_uuid`."""
    named = set(columns)
    return "context" in named and ("session_id" in named or set(_CUSTOMER_COLUMNS) <= named)


_LINE_ENDS: Final = ("\n", "\r")
_SKIP_CHUNK: Final = 1 << 20  # characters read at a time while skipping an over-long line


def read_first_line(stream: IO[str], max_context_bytes: int) -> str:
    """The first line, for `detect_format`, read no further than any record may be long."""
    return stream.readline(max_record_chars("jsonl", max_context_bytes) + 1)


def input_lines(
    stream: IO[str], input_format: InputFormat, max_context_bytes: int, *, first: str = ""
) -> Iterator[str]:
    """The lines of INPUT for `read_records`, starting with `first` (already read from it).

    JSON Lines are read in bounded pieces: a line longer than any record may be is cut
    after `max_record_chars + 1` characters and the rest of it is read and dropped in 1 Mi
    character chunks, so one huge line is never held in memory (it is still reported as too
    long). CSV lines go to `read_records` whole: a record may span lines there, and
    `read_records` bounds the record itself.
    """
    limit = max_record_chars(input_format, max_context_bytes)
    if input_format == "csv":
        if first and not first.endswith(_LINE_ENDS):
            first += stream.readline()  # a first line cut short by read_first_line
        if first:
            yield first
        yield from stream
        return
    line = first
    while True:
        if not line:
            line = stream.readline(limit + 1)
            if not line:
                return
        if len(line) > limit and not line.endswith(_LINE_ENDS):
            while True:  # skip to the line's real end, keeping only its start
                chunk = stream.readline(_SKIP_CHUNK)
                if not chunk or chunk.endswith(_LINE_ENDS):
                    break
        yield line
        line = ""


def read_records(
    lines: Iterable[str], input_format: InputFormat, *, max_context_bytes: int
) -> Iterator[Record]:
    """The records of these lines, read lazily and in order.

    Raises:
        InputError: At once, before any record is read, when a CSV header does not name
            `context` and `session_id`, or `context`, `customer_id` and `agent_uuid`.
    """
    limit = max_record_chars(input_format, max_context_bytes)
    if input_format == "csv":
        return _read_csv(lines, limit)
    return _read_jsonl(lines, limit)


def _read_jsonl(lines: Iterable[str], limit: int) -> Iterator[Record]:
    index = 0
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        yield _jsonl_record(index, line_number, line, limit)
        index += 1


def _load_json(line: str) -> tuple[object, str | None]:
    """The line's JSON value, or why it has none."""
    try:
        return json.loads(line), None
    except ValueError:
        return None, "not valid JSON"
    except RecursionError:  # json's parser recurses once per level of nesting
        return None, "nested too deeply"


def _jsonl_record(index: int, line_number: int, line: str, limit: int) -> Record:
    def malformed(problem: str) -> Record:
        return Record(index, line_number, None, f"line {line_number}: {problem}")

    if len(line) > limit:
        return malformed(f"longer than {limit} characters")
    if _SURROGATE.search(line):
        return malformed("not valid UTF-8")
    value, problem = _load_json(line)
    if problem is not None:
        return malformed(problem)
    fields = value if isinstance(value, dict) else {}
    request, problem = _request(
        fields.get("session_id"),
        fields.get("customer_id"),
        fields.get("agent_uuid"),
        fields.get("context"),
    )
    if request is None:
        return malformed(problem or _NEEDS)
    return Record(index, line_number, request)


def _request(
    session_id: object, customer_id: object, agent_uuid: object, context: object
) -> tuple[Request | None, str | None]:
    """The request a JSON object's fields make (a missing or null field is absent), or why none.

    A session row names `session_id`; a customer row names `customer_id` and `agent_uuid`;
    either way `context`, and every field given is a string without lone surrogates.
    """
    given = {
        name: text
        for name, text in (
            ("session_id", session_id),
            ("customer_id", customer_id),
            ("agent_uuid", agent_uuid),
            ("context", context),
        )
        if text is not None
    }
    by_customer = [name for name in _CUSTOMER_COLUMNS if name in given]
    problem = None
    if not all(isinstance(text, str) for text in given.values()) or "context" not in given:
        problem = _NEEDS
    elif "session_id" in given and by_customer:
        problem = _BOTH
    elif len(by_customer) == 1:
        problem = _HALF
    elif "session_id" not in given and not by_customer:
        problem = _NEEDS
    else:
        problem = next(
            (
                f"lone surrogate (a \\ud800-\\udfff escape) in {name}"
                for name, text in given.items()
                if _SURROGATE.search(str(text))
            ),
            None,
        )
    if problem is not None:
        return None, problem
    if by_customer:
        request: Request = CustomerInjectRequest(
            customer_id=str(customer_id), agent_uuid=str(agent_uuid), context=str(context)
        )
    else:
        request = InjectRequest(session_id=str(session_id), context=str(context))
    return request, None


def _shrink(line: str) -> str:
    """A stand-in for `line` that leaves csv's reader in the same state, in a few characters.

    Each run of characters other than quotes and line ends becomes two characters keeping
    whether it starts and ends with a comma (all that decides the state after it), and a run
    of four or more quotes becomes two or three (quote pairs cancel out).
    """
    line = _PLAIN_RUN.sub(
        lambda run: ("," if run[0][0] == "," else "x") + ("," if run[0][-1] == "," else "x"),
        line,
    )
    return _QUOTE_RUN.sub(lambda run: '"' * (2 + len(run[0]) % 2), line)


class _CsvRows:
    """csv.reader over lines, with each record's size bounded.

    A record whose quoted field is still open at the end of the input is reported as such:
    csv's default reader would return everything after the quote as one field, and its
    strict mode would also refuse harmless exports (`"a" ,b`) and, after an error, read the
    rest of a multi-line field as records.

    Once a record grows past `limit` characters, its remaining lines reach csv through
    `_shrink`: csv still finds where the record really ends (a quoted field may span lines)
    while holding only a few characters per line, and the record is reported as too long.
    """

    def __init__(self, lines: Iterable[str], limit: int) -> None:
        csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
        self._lines = lines
        self._limit = limit
        self._record_chars = 0
        self._record_blank = True
        self._exhausted = False
        self._reader = csv.reader(self._feed())

    def _feed(self) -> Iterator[str]:
        for line in self._lines:
            self._record_chars += len(line)
            self._record_blank = self._record_blank and not line.strip()
            yield line if self._record_chars <= self._limit else _shrink(line)
        # csv asks for more input within a record only while inside a quoted field, so a
        # record it still returns after this was cut off by the end of the input.
        self._exhausted = True

    def __iter__(self) -> Iterator[tuple[int, list[str], str | None]]:
        """(line where the record starts, its fields, why it cannot be used or None).

        Blank lines (empty or only spaces) are skipped: they are no record and take no index.
        """
        while True:
            self._record_chars = 0
            self._record_blank = True
            first_line = self._reader.line_num + 1
            try:
                row = next(self._reader)
            except StopIteration:
                return
            except csv.Error as error:  # not expected with the limit lifted; never fatal
                yield first_line, [], f"line {first_line}: {error}"
                continue
            if self._exhausted:  # csv (not strict) would return the rest of the file as one field
                yield first_line, [], f"line {first_line}: {_UNCLOSED}"
            elif self._record_blank:  # no record, as in JSON Lines (csv would return [])
                continue
            elif self._record_chars > self._limit:
                yield first_line, [], f"line {first_line}: longer than {self._limit} characters"
            else:
                yield first_line, row, None


def _read_csv(lines: Iterable[str], limit: int) -> Iterator[Record]:
    rows = iter(_CsvRows(lines, limit))
    header = next(rows, None)
    if header is None:
        return iter(())
    columns = [cell.strip() for cell in header[1]]
    if not _usable_header(columns):
        raise InputError(
            'the CSV header (line 1) must name the columns "context" and "session_id", '
            'or "context", "customer_id" and "agent_uuid"'
        )
    twice = sorted({name for name in columns if name and columns.count(name) > 1})
    if twice:
        # Which of the two would be the address or the context is a guess: refuse it.
        named = ", ".join(f'"{name}"' for name in twice)
        raise InputError(f"the CSV header (line 1) names {named} more than once")
    return _csv_records(rows, _CsvColumns.of(columns))


@attrs.frozen
class _CsvColumns:
    """Where each named column is in a CSV row (None: the header does not name it)."""

    session_id: int | None
    customer_id: int | None
    agent_uuid: int | None
    context: int

    @classmethod
    def of(cls, columns: list[str]) -> _CsvColumns:
        """The positions of the named columns in a usable header (see `_usable_header`)."""

        def at(name: str) -> int | None:
            return columns.index(name) if name in columns else None

        context = columns.index("context")
        return cls(at("session_id"), at("customer_id"), at("agent_uuid"), context)

    @property
    def needed(self) -> int:
        """How many cells a row needs to reach every named column."""
        named = (self.session_id, self.customer_id, self.agent_uuid, self.context)
        return 1 + max(at for at in named if at is not None)

    def request(self, row: list[str]) -> tuple[Request | None, str | None]:
        """The request a row makes, or why it makes none (ids and context as written).

        In a header without customer columns every row is a session row, as before they
        existed (a blank session_id then fails as an invalid item, not as malformed input).
        Otherwise a row gives a session_id, or a customer_id and an agent_uuid: a blank
        cell counts as not given.
        """

        def cell(at: int | None) -> str:
            # Blank counts as not given; otherwise the id as written: the SDK refuses one
            # with outer spaces rather than address another customer's session.
            value = row[at] if at is not None else ""
            return value if value.strip() else ""

        session_id, context = cell(self.session_id), row[self.context]
        if self.customer_id is None and self.agent_uuid is None:
            return InjectRequest(session_id=session_id, context=context), None
        customer_id, agent_uuid = cell(self.customer_id), cell(self.agent_uuid)
        if customer_id and agent_uuid and not session_id:
            request = CustomerInjectRequest(
                customer_id=customer_id, agent_uuid=agent_uuid, context=context
            )
            return request, None
        if session_id and not (customer_id or agent_uuid):
            return InjectRequest(session_id=session_id, context=context), None
        if session_id:
            problem = _BOTH
        elif customer_id or agent_uuid:
            problem = _HALF
        elif self.session_id is None:
            problem = "needs a customer_id and an agent_uuid"
        else:
            problem = "needs a session_id, or a customer_id and an agent_uuid"
        return None, problem


def _csv_records(
    rows: Iterator[tuple[int, list[str], str | None]], columns: _CsvColumns
) -> Iterator[Record]:
    for index, (line_number, row, problem) in enumerate(rows):
        if problem is not None:
            yield Record(index, line_number, None, problem)
        elif any(_SURROGATE.search(cell) for cell in row):
            yield Record(index, line_number, None, f"line {line_number}: not valid UTF-8")
        elif len(row) < columns.needed:
            yield Record(index, line_number, None, f"line {line_number}: too few columns")
        else:
            request, why = columns.request(row)
            if request is None:
                yield Record(index, line_number, None, f"line {line_number}: {why}")
            else:
                yield Record(index, line_number, request)


def open_text(path: str) -> IO[str]:
    """Open INPUT (a regular file, or `-` for stdin) as `decode_input` decodes it.

    Raises:
        InputError: INPUT is missing, a directory, not a regular file or cannot be opened,
            with a one-line reason.
    """
    if path == "-":
        if sys.stdin is None:
            raise InputError("INPUT is -, but stdin is closed")
        return decode_input(sys.stdin.buffer)
    return decode_input(open_regular_file(Path(path)))


def open_regular_file(path: Path) -> IO[bytes]:
    """Open INPUT for reading in binary, refusing anything but a regular file.

    The file is opened non-blocking and checked with `fstat` before anything is read: a
    FIFO would otherwise block in `open` until a writer appears, and a device could be read
    forever. A bulk run reads INPUT twice (to count and identify it, then to send it), which
    a pipe or device cannot do either; stdin (`-`) is the way to stream.

    Raises:
        InputError: INPUT is missing, a directory, not a regular file or cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"no such input file: {path}") from None
    except IsADirectoryError:
        raise InputError(f"INPUT is a directory: {path}") from None
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (use - for stdin)"
        raise InputError(f"INPUT is {kind}: {path}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def decode_input(raw: IO[bytes]) -> IO[str]:
    """Input bytes as text: UTF-8, a leading BOM skipped, undecodable bytes kept as escapes.

    Lines end at LF, CRLF or CR and keep their ending (as the csv module needs). Every reader
    of INPUT (the run, the pre-count) decodes it this way, so they agree on its records.
    """
    return io.TextIOWrapper(raw, encoding=_ENCODING, errors="surrogateescape", newline="")
