"""The SDK's log records as one line each, for people (text) or machines (JSON lines).

Every record the SDK logs carries structured fields in `extra` (see `FIELDS` and
docs/observability.md), so a JSON line needs no parsing of the message. Each line is redacted
of the secrets it was given (the CLI gives it the token) and of control characters, whatever a
server echoed into a message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import Final

from osvi_async.errors import APIStatusError, OsviError

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

# What an API error code looks like ("session_not_found", "engine_rejected"). Anything else a
# server put there (a 422's joined messages, an echo of the request, an upstream's sentence)
# is free text that may quote the context or a customer id: it stays out of log records and
# span attributes (the raised error keeps it, for the caller).
_API_CODE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")


def api_code(code: str | None) -> str | None:
    """`code` if it looks like an API error code (`^[a-z][a-z0-9_]{0,63}$`), else None."""
    if code is not None and _API_CODE.fullmatch(code):
        return code
    return None


def customer_pseudonym(customer_id: str) -> str:
    """How log records name a customer: `customer #` and the first 8 hex digits of the id's
    SHA-256. The same customer reads the same in every line (operators can follow one), and
    the id itself, personal data, is in none."""
    digest = hashlib.sha256(customer_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"customer #{digest[:8]}"


def failure_for_logs(error: OsviError) -> str:
    """A failure in words a log record may carry: `HTTP <status> <code>` for an answered
    failure (the code only when it is one), else the error's class; never its message, which
    may name a customer or quote what a server sent."""
    if isinstance(error, APIStatusError):
        code = api_code(error.code)
        return f"HTTP {error.status} {code}" if code else f"HTTP {error.status}"
    return type(error).__name__


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
