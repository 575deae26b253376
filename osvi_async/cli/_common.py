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
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

import click

from osvi_async import (
    APIConnectionError,
    APIStatusError,
    ClientValidationError,
    OsviClient,
    OsviError,
)
from osvi_async.cli import install_stop_handlers
from osvi_async.cli._options import FiniteFloat

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
    """Prints a command's lines with the API token redacted, whatever a server echoed."""

    def __init__(self, token: str | None) -> None:
        """Redact `token` (None or empty: nothing to redact) from every line printed."""
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
        """One line (or several, for a multi-line value) on stdout."""
        click.echo(self.redact(text))

    def fail(self, message: str, code: int) -> click.exceptions.Exit:
        """Print `error: message` on stderr as one line; returns the exit to raise."""
        click.echo(f"error: {' '.join(self.redact(message).split())}", err=True)
        return click.exceptions.Exit(code)


def fail(message: str, code: int) -> click.exceptions.Exit:
    """Print `error: message` on stderr; returns the exit to raise (no token to redact)."""
    return Output(None).fail(message, code)


def error_exit(
    error: OsviError, output: Output | None = None, *, recovery: str | None = None
) -> click.exceptions.Exit:
    """One line for a person, and the exit code for scripts.

    The SDK's message already says what to do (for a failure that may have been applied:
    how to check before sending again, in the SDK's words); `recovery`, the same check as a
    command, is added to the line when the failure may have been applied.
    """
    out = output or Output(None)
    message = str(error)
    if recovery is not None and error.may_have_been_applied:
        message += f"; to check: {recovery}"
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
