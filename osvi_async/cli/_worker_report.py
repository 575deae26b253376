"""The `osvi-async worker --report` file: one JSON line per message the worker settled.

It is written the way the bulk report is (`ReportWriter`: one unbuffered `write` per line, so
a kill tears at most the last line; text that is not valid Unicode written as `\\uXXXX`), but
it is a log, not a journal to resume from: there is no header, and a worker appends to the
file run after run. A torn last line left by a kill gets its newline before the first new
line, so every later line stays whole. One worker at a time writes a report: it is locked
(`flock`) while the worker runs, as a bulk run locks its own.
"""

from __future__ import annotations

import os
from pathlib import Path

from osvi_async import (
    APIStatusError,
    CustomerInjectRequest,
    InjectOutcome,
    InjectRequest,
    refused_for_good,
)
from osvi_async.cli._report import ReportError, ReportWriter, open_locked


def settled_as(outcome: InjectOutcome) -> str:
    """What the worker did with the message: `acked` (applied), `dead_lettered` (refused for
    good), or `returned` (left unacked: the broker delivers it again)."""
    if outcome.ok:
        return "acked"
    if outcome.error is not None and refused_for_good(outcome.error):
        return "dead_lettered"
    return "returned"


class WorkerReportWriter(ReportWriter):
    """Appends one outcome line per settled message (see the module doc for the fields)."""

    def write_message(self, outcome: InjectOutcome, message_id: str | None) -> None:
        """Record how one message ended: `Worker`'s `on_outcome` hook.

        Fields: `message_id`, the request's `session_id` (for a message addressed by
        customer: the session the entry went to, when known), `customer_id`, `agent_uuid`,
        `context`, `ok`, `settled` (`acked`, `dead_lettered` or `returned`), `error` (the
        error class), `code` (the API's error code), `message`, `may_have_been_applied`,
        `possible_duplicate` and `attempts`.
        """
        request, error, result = outcome.request, outcome.error, outcome.result
        session_id = request.session_id if isinstance(request, InjectRequest) else None
        customer_id = agent_uuid = None
        if isinstance(request, CustomerInjectRequest):
            customer_id, agent_uuid = request.customer_id, request.agent_uuid
            if result is not None:
                session_id = result.session_id
            elif isinstance(error, APIStatusError):
                session_id = error.session_id
        self._write(
            {
                "message_id": message_id,
                "session_id": session_id,
                "customer_id": customer_id,
                "agent_uuid": agent_uuid,
                "context": request.context if request is not None else None,
                "ok": outcome.ok,
                "settled": settled_as(outcome),
                "error": type(error).__name__ if error is not None else None,
                "code": error.code if isinstance(error, APIStatusError) else None,
                "message": str(error) if error is not None else None,
                "may_have_been_applied": bool(error is not None and error.may_have_been_applied),
                "possible_duplicate": bool(result is not None and result.possible_duplicate),
                "attempts": outcome.attempts,
            }
        )


def open_worker_report(path: Path) -> WorkerReportWriter:
    """Open (or create) and lock the report, ending a torn last line first.

    Raises:
        ReportError: The report is not a regular file, another worker writes it, or it
            cannot be opened or written; one line for the user (exit 2).
    """
    fd = open_locked(path, "worker")
    file = os.fdopen(fd, "r+b", buffering=0)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")  # appended (O_APPEND): the torn line stays, as a torn line
    except OSError as error:
        file.close()
        raise ReportError(f"cannot use the report {path}: {error.strerror}") from None
    return WorkerReportWriter(file)
