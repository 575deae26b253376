"""What the command line writes: text made safe for a terminal, and stdout failures as one line.

Server-controlled text (contexts, replies, ids, error messages) reaches a person's terminal. A
raw ESC or 8-bit CSI (`\\x9b`) can rewrite the screen, a CR or a newline can make one context
entry look like two, a bidi override can reorder what is shown. `visible` writes each such
character as an escape (`\\n`, `\\x1b`, `\\u202e`) and changes nothing else: ids and text keep
their spaces, so a message never shows another value than the one sent or received. `--json`
output stays exact JSON: the same characters are written there as `\\uXXXX` escapes, which a
JSON reader turns back into the very same string.

Writing stdout can fail: a full disk (`> /dev/full`), stdout closed (`>&-`), or the reader gone
(`| head -c1`, EPIPE). `guard_stdout` wraps sys.stdout so that any such failure, whoever writes
(click, rich, print), becomes an `OutputError`, which the entry point prints as one line,
`error: cannot write output: REASON`, exit 1; a broken pipe exits 1 quietly, as Unix tools do
when their reader has stopped reading on purpose.
"""

from __future__ import annotations

import errno
import re
import sys
from typing import Any, Final, TextIO, cast

_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f"  # C0, DEL and C1 controls (ESC, CR, BEL, 8-bit CSI, ...)
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidi marks, embeddings, overrides, isolates
    "\u2028\u2029"  # line and paragraph separators: a line break to some terminals
    "\ud800-\udfff]"  # lone surrogates: not encodable, they would crash the write
)


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def visible(text: str) -> str:
    """`text` with control, bidi and line-separator characters written as escapes (`\\n`)."""
    return _UNSAFE.sub(_escape, text)


def visible_json(text: str) -> str:
    """A line of JSON with the same characters as `\\uXXXX` escapes: the same JSON value.

    Outside its strings, JSON text holds only ASCII punctuation, digits, letters and spaces,
    so every character this replaces sits inside a string, where the escape means itself.
    """
    return _UNSAFE.sub(_json_escape, text)


class OutputError(Exception):
    """Writing stdout failed; `reason` says why, `broken_pipe` when the reader went away."""

    def __init__(self, reason: str, *, broken_pipe: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.broken_pipe = broken_pipe

    @classmethod
    def from_os_error(cls, error: OSError) -> OutputError:
        """The error for a failed write or flush."""
        reason = error.strerror or str(error) or type(error).__name__
        return cls(reason, broken_pipe=error.errno == errno.EPIPE)


CLOSED: Final = "stdout is closed"


class _GuardedStdout:
    """sys.stdout, with every write failure raised as `OutputError` (see the module doc)."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if self._stream is None:
            raise OutputError(CLOSED)
        try:
            return self._stream.write(text)
        except OSError as error:
            raise OutputError.from_os_error(error) from None
        except ValueError as error:  # "I/O operation on closed file"
            raise OutputError(CLOSED) from error

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.flush()
        except OSError as error:
            raise OutputError.from_os_error(error) from None
        except ValueError as error:
            raise OutputError(CLOSED) from error

    def isatty(self) -> bool:
        return self._stream is not None and not self._stream.closed and self._stream.isatty()

    def __getattr__(self, name: str) -> Any:  # encoding, errors, fileno, buffer, ...
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)


def guard_stdout() -> None:
    """Make every failed write to stdout an `OutputError` (once; idempotent)."""
    if not isinstance(sys.stdout, _GuardedStdout):
        sys.stdout = cast("TextIO", _GuardedStdout(sys.stdout))


def stdout_closed() -> bool:
    """Whether the process started with stdout closed (nothing it prints can be shown)."""
    stream = sys.stdout
    if isinstance(stream, _GuardedStdout):
        return stream._stream is None  # this module's own class
    return stream is None
