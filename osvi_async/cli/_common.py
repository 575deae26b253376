"""What every `osvi-async` command that talks to the API shares: its options, its client, its
exit codes, and the one line it prints for an error.

Exit codes: 0 success; 1 the API refused or failed; 2 usage errors and invalid input, before
anything is sent; 3 the API could not be reached; 4 a lookup by customer and agent found no
active session (`session get`, `inject --customer`). 130 and 143 (signals) come from
`osvi_async.cli`. Errors are one line on stderr, never a traceback, and never contain the
token: the SDK redacts it from what it quotes, and `Output` redacts it once more from
everything a command prints, in case a server echoed it into a field the SDK hands on as data.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

import attrs
import click

from osvi_async import (
    APIConnectionError,
    APIStatusError,
    ClientValidationError,
    OsviClient,
    OsviError,
)
from osvi_async.cli import install_stop_handlers, set_stop_note
from osvi_async.cli._options import FiniteFloat
from osvi_async.cli._output import CLOSED, OutputError, stdout_closed, visible, visible_json

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_NO_ACTIVE_SESSION: Final = 4

REDACTED: Final = "[REDACTED]"
_TOKEN_HELP: Final = "API token; defaults to $OSVI_API_TOKEN. Never printed."  # noqa: S105
_URL_HELP: Final = "API root; defaults to $OSVI_BASE_URL, then https://api.osvi.ai."
TIMEOUT: Final = FiniteFloat(min=0, min_open=True)


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (the `fast` extra), else on asyncio's own loop.

    Closing a loop may restore the default signal handlers (a loop's signal handlers are
    removed with SIG_DFL), so the entry point's stop handlers are put back afterwards.
    """
    try:
        import uvloop  # noqa: PLC0415 - optional: the `fast` extra
    except ImportError:
        try:
            return asyncio.run(coroutine)
        finally:
            install_stop_handlers()
    try:
        result: T = uvloop.run(coroutine)  # typed as Any where uvloop is not installed
    finally:
        install_stop_handlers()
    return result


class Output:
    """Prints a command's lines with the API token redacted, whatever a server echoed.

    Text for a person has its control characters escaped (`visible`), JSON its unsafe ones
    written as `\\uXXXX` (`visible_json`); nothing else is changed, so every value shows as is.
    """

    def __init__(self, token: str | None, *, results: bool = True) -> None:
        """Redact `token` (None or empty: nothing to redact) from every line printed.

        `results`: the command prints its result on stdout, so a closed stdout is refused
        now (`OutputError`), before anything is sent, rather than after the call succeeded.
        """
        if results and stdout_closed():
            raise OutputError(CLOSED)
        # The token as printed, and as JSON spells it inside a string (--json output).
        forms = {token, json.dumps(token, ensure_ascii=False)[1:-1]} if token else set()
        self._forms = sorted(forms, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the token replaced by `[REDACTED]`."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text

    def line(self, text: str = "") -> None:
        """One line for a person on stdout, control characters escaped."""
        click.echo(self.redact(visible(text)))

    def json(self, text: str) -> None:
        """One line of JSON on stdout (already encoded), unsafe characters as JSON escapes."""
        click.echo(self.redact(visible_json(text)))

    def fail(self, message: str, code: int) -> click.exceptions.Exit:
        """Print `error: message` on stderr as one line; returns the exit to raise.

        The message is printed as is, with control characters escaped (a newline as `\\n`),
        so an id or a server's text shows exactly, spaces included.
        """
        click.echo(f"error: {self.redact(visible(message))}", err=True)
        return click.exceptions.Exit(code)


def fail(message: str, code: int) -> click.exceptions.Exit:
    """Print `error: message` on stderr; returns the exit to raise (no token to redact)."""
    return Output(None, results=False).fail(message, code)


@attrs.frozen
class Check:
    """How to tell whether a state-changing call that may have been applied was.

    Attributes:
        how: What to run or do to check (a command, or a sentence when there is none).
        repeats: The call is retried after an attempt that may have been applied (inject,
            whisper: at least once), so every attempt may have applied it.
    """

    how: str
    repeats: bool = False

    def note(self, attempts: int) -> str:
        """`may have been applied[, possibly N times]; to check: HOW`, for an error line."""
        times = f", possibly more than once ({attempts} attempts)" if self.repeats else ""
        return f"may have been applied{times if attempts > 1 else ''}; to check: {self.how}"

    def stop_note(self) -> str:
        """What a stop signal's line adds while the call is in flight."""
        times = " (more than once, if it was retried)" if self.repeats else ""
        return f"the request was in flight and may have been applied{times}; to check: {self.how}"


def check_by_customer(customer_id: str, agent_uuid: str, *, repeats: bool = False) -> Check:
    """Check with `osvi-async session get --customer C --agent A` (ids shell-quoted)."""
    customer, agent = shlex.quote(customer_id), shlex.quote(agent_uuid)
    return Check(f"osvi-async session get --customer {customer} --agent {agent}", repeats)


def check_by_session(session_id: str, *, repeats: bool = False) -> Check:
    """There is no lookup by session id: say so, and how to look the session up instead."""
    return Check(
        "osvi-async session get --customer C --agent A with session "
        f"{session_id}'s customer and agent (the API has no lookup by session id)",
        repeats,
    )


def before_sending(check: Check) -> None:
    """From now on a stop signal's line says the request may have been applied, and how to
    check (`osvi_async.cli.stop_now`). Call right before a state-changing call."""
    set_stop_note(visible(check.stop_note()))


def error_exit(
    error: OsviError, output: Output | None = None, *, check: Check | None = None
) -> click.exceptions.Exit:
    """One line for a person, and the exit code for scripts.

    Whenever the failure may have been applied, the line says so, and how to check (`check`;
    without one, only that it may have been applied), possibly more than once when the call
    is retried after such attempts. The SDK's own message may say it in its words too.
    """
    out = output or Output(None, results=False)
    message = str(error)
    if error.may_have_been_applied:
        if check is not None:
            message += f"; {check.note(error.attempts)}"
        else:
            message += "; may have been applied"
    if isinstance(error, ClientValidationError):
        return out.fail(f"invalid input: {message}", EXIT_USAGE)
    if isinstance(error, APIStatusError):
        return out.fail(f"{error.code or f'HTTP {error.status}'}: {message}", EXIT_FAILED)
    if isinstance(error, APIConnectionError):
        return out.fail(f"{type(error).__name__}: {message}", EXIT_UNREACHABLE)
    return out.fail(f"{type(error).__name__}: {message}", EXIT_FAILED)


def no_active_session(customer_id: str, agent_uuid: str | None) -> str:
    """The exit-4 line's message: who has no active session, and how to open one."""
    with_agent = f" with agent {agent_uuid}" if agent_uuid is not None else ""
    return (
        f"no active session: customer {customer_id} has none{with_agent}; "
        "open one with osvi-async session create or osvi-async message send"
    )


def make_client(token: str | None, base_url: str | None, timeout: float) -> OsviClient:
    """The client for one command; no token is a usage error (exit 2), as is a bad option."""
    if not token:
        raise fail("no API token: pass --token or set OSVI_API_TOKEN", EXIT_USAGE)
    if base_url is None and os.environ.get("OSVI_BASE_URL") == "":
        # Refused like `--base-url ''`: an empty variable is more likely a slip in a deploy
        # script than a wish for the production default.
        raise fail(
            "OSVI_BASE_URL is set but empty: unset it to use https://api.osvi.ai, "
            "or set it to the API root",
            EXIT_USAGE,
        )
    try:
        return OsviClient(token, base_url=base_url, timeout=timeout)
    except ClientValidationError as error:
        raise error_exit(error) from None


def api_options(command: F) -> F:
    """--token, --base-url and --timeout, the same on every command that calls the API."""
    command = click.option("--timeout", type=TIMEOUT, default=30.0, help="Seconds per attempt.")(
        command
    )
    command = click.option("--base-url", envvar="OSVI_BASE_URL", show_envvar=False, help=_URL_HELP)(
        command
    )
    return click.option("--token", envvar="OSVI_API_TOKEN", show_envvar=False, help=_TOKEN_HELP)(
        command
    )


def json_option(command: F) -> F:
    """--json: print the result as one JSON object instead of lines for a person."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(
        command
    )


def non_blank(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback: a given value must hold more than whitespace (None passes through)."""
    if value is not None and not value.strip():
        raise click.BadParameter("must not be blank", ctx=ctx, param=param)
    return value
