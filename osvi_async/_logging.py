"""The SDK's log records as one line each, for people (text) or machines (JSON lines).

Every record the SDK logs carries structured fields in `extra` (see `FIELDS` and
docs/observability.md), so a JSON line needs no parsing of the message. Each line is redacted
of the secrets it was given (the CLI gives it the token) and of control characters, whatever a
server echoed into a message.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable
from typing import Final

FIELDS: Final = (
    "event",
    "endpoint",
    "attempt",
    "delay",
    "status",
    "code",
    "error_type",
    "may_have_been_applied",
    "failures",
)
"""The structured fields SDK records may carry (`extra`), in the order JSON lines show them."""

REDACTED: Final = "[REDACTED]"


def _stderr_line(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class LineHandler(logging.Handler):
    """Writes each record as one line: `level: message`, or a JSON object with the record's
    structured fields (`--log-format json`). Where the lines go can change while it is
    installed (`write`): a progress bar routes them above itself."""

    def __init__(
        self,
        *,
        json_lines: bool = False,
        secrets: Iterable[str] = (),
        write: Callable[[str], None] = _stderr_line,
    ) -> None:
        super().__init__(logging.NOTSET)  # the loggers' levels decide
        self.json_lines = json_lines
        self.secrets = {secret for secret in secrets if secret}
        self.write = write

    def line(self, record: logging.LogRecord) -> str:
        """The record as one line, secrets redacted."""
        message = " ".join(record.getMessage().split())
        level = record.levelname.lower()
        if not self.json_lines:
            text = f"{level}: {message}"
            if record.exc_info:
                text += " | " + " ".join(self._exception(record).split())
            return self._redact(text)
        fields: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": level,
            "logger": record.name,
            "message": message,
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                fields[name] = value
        if record.exc_info:
            fields["exception"] = self._exception(record)
        return self._redact(json.dumps(fields, ensure_ascii=True, default=str))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(self.line(record))
        except Exception:
            self.handleError(record)

    def _exception(self, record: logging.LogRecord) -> str:
        assert record.exc_info is not None
        return logging.Formatter().formatException(record.exc_info)

    def _redact(self, line: str) -> str:
        for secret in self.secrets:
            line = line.replace(secret, REDACTED)
        return line
