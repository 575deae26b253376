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

import json
import logging
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
from osvi_async._config import DEFAULT_MAX_CONNECTIONS
from osvi_async._logging import LineHandler
from osvi_async._loop import EVENT_LOOP_CHOICES, EVENT_LOOP_ENV, choose_event_loop
from osvi_async._loop import run as run_on_loop
from osvi_async._transport import HTTP_BACKENDS, HttpBackend
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
_LOOP_HELP: Final = (
    "Event loop: auto (uvloop when installed, else asyncio), asyncio, or uvloop (an error "
    "when missing)."
)
_HTTP_BACKEND_HELP: Final = "HTTP stack: aiohttp, or reqwest (pip install 'osvi-async[reqwest]')."
_EVENT_LOOP_KEY: Final = "osvi_async.event_loop"
_HTTP_BACKEND_KEY: Final = "osvi_async.http_backend"
TIMEOUT: Final = FiniteFloat(min=0, min_open=True)
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
_SDK_LOGGER: Final = "osvi_async"
_CLI_LOGGER: Final = "osvi_async.cli"
_log_lines: LineHandler | None = None  # the handler --log-level / --log-format installed


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on the event loop `osvi-async --loop` chose (`osvi_async._loop.run`).

    Closing a loop may restore the default signal handlers (a loop's signal handlers are
    removed with SIG_DFL), so the entry point's stop handlers are put back afterwards.
    """
    try:
        return run_on_loop(coroutine, event_loop=chosen_loop())
    finally:
        install_stop_handlers()


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
        stderr_line(self.redact(visible(message)), event="error", level=logging.ERROR)
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


def make_client(
    token: str | None, base_url: str | None, timeout: float, *, concurrency: int = 0
) -> OsviClient:
    """The client for one command; no token is a usage error (exit 2), as is a bad option.

    It sends through the `--http-backend` its command was given (`http_backend_option`);
    "reqwest" without pyreqwest installed is the client's one-line usage error. A command
    running `concurrency` requests at once gets at least that many connections: waiting for
    a pooled connection eats into each attempt's timeout.
    """
    if not token:
        raise fail("no API token: pass --token or set OSVI_API_TOKEN", EXIT_USAGE)
    if _log_lines is not None:
        _log_lines.secrets.add(token)  # whatever a log line may quote, never the token
    if base_url is None and os.environ.get("OSVI_BASE_URL") == "":
        # Refused like `--base-url ''`: an empty variable is more likely a slip in a deploy
        # script than a wish for the production default.
        raise fail(
            "OSVI_BASE_URL is set but empty: unset it to use https://api.osvi.ai, "
            "or set it to the API root",
            EXIT_USAGE,
        )
    try:
        return OsviClient(
            token,
            base_url=base_url,
            timeout=timeout,
            max_connections=max(DEFAULT_MAX_CONNECTIONS, concurrency),
            http_backend=http_backend(),
        )
    except ClientValidationError as error:
        raise error_exit(error) from None


def _chosen(key: str) -> str | None:
    """What an option of this invocation stored under `key` (None outside a command)."""
    ctx = click.get_current_context(silent=True)
    value = ctx.meta.get(key) if ctx is not None else None
    return value if isinstance(value, str) else None


def loop_option(command: F) -> F:
    """--loop {auto,asyncio,uvloop}: the event loop every command of the process runs on.

    On the group, since the loop belongs to the process, not to one command: `osvi-async
    --loop asyncio bulk ...`. Call `choose_loop` with its value in the group's callback.
    """
    return click.option(
        "--loop",
        "event_loop",
        type=click.Choice(EVENT_LOOP_CHOICES),
        default="auto",
        envvar=EVENT_LOOP_ENV,
        show_envvar=True,  # also names the variable in the error for a bad value in it
        show_default=True,
        help=_LOOP_HELP,
    )(command)


def choose_loop(event_loop: str) -> None:
    """Check --loop now, before a command reads input or sends anything; `run_coroutine`
    then runs on it. uvloop asked for but not installed: one line, exit 2."""
    try:
        chosen = choose_event_loop(event_loop)
    except ClientValidationError as error:
        raise fail(str(error), EXIT_USAGE) from None
    click.get_current_context().meta[_EVENT_LOOP_KEY] = chosen


def chosen_loop() -> str | None:
    """The loop `choose_loop` chose for this process (None outside a command:
    `$OSVI_EVENT_LOOP` decides)."""
    return _chosen(_EVENT_LOOP_KEY)


def log_options(command: F) -> F:
    """--log-level and --log-format {text,json}: how the SDK's log records reach stderr.

    On the group, like --loop (logging belongs to the process): `osvi-async --log-format json
    bulk ...`. Call `configure_logs` with their values in the group's callback. Without
    either, records go where they always did (warnings as lines on stderr).
    """
    command = click.option(
        "--log-format",
        type=click.Choice(("text", "json"), case_sensitive=False),
        default="text",
        show_default=True,
        help="SDK log records on stderr: 'level: message' lines, or JSON lines with the "
        "structured fields (event, endpoint, attempt, delay, status, code).",
    )(command)
    return click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default=None,
        help="Least severe SDK log records shown on stderr (default: warning).",
    )(command)


def configure_logs(level: str | None, log_format: str) -> None:
    """Install one line handler on the SDK's logger, if --log-level or a non-default
    --log-format asked for it; the token (once known, see `make_client`) is redacted."""
    global _log_lines  # noqa: PLW0603 - one handler per process, as logging's own state
    log_format = log_format.lower()  # --log-format JSON, like --log-level DEBUG
    if level is None and log_format == "text":
        return
    logger = logging.getLogger(_SDK_LOGGER)
    if _log_lines is not None:
        logger.removeHandler(_log_lines)
    _log_lines = LineHandler(
        json_lines=log_format == "json", secrets=[os.environ.get("OSVI_API_TOKEN", "")]
    )
    logger.addHandler(_log_lines)
    logger.setLevel((level or "warning").upper())
    logger.propagate = False  # one copy, not a second through the root logger


def log_lines() -> LineHandler | None:
    """The handler `configure_logs` installed (None: the options were not given)."""
    return _log_lines


def json_logs() -> bool:
    """Whether `--log-format json` is on: then every line the CLI writes on stderr (an error,
    a run's summary, a worker's counters) is a JSON record too, and no progress bar is drawn."""
    return _log_lines is not None and _log_lines.json_lines


def stderr_line(
    text: str,
    *,
    event: str,
    level: int = logging.INFO,
    write: Callable[[str], None] | None = None,
    **fields: object,
) -> None:
    """One of the CLI's own lines on stderr: with `--log-format json`, a JSON record
    (`event`, `level`, `message`; through the log handler, whatever `--log-level`: it is the
    command's output, not a diagnostic); else `text` as a line (`error: text` for an error),
    through `write` if given, exactly as without logging options."""
    handler = _log_lines
    if handler is not None and handler.json_lines:
        record = logging.LogRecord(_CLI_LOGGER, level, __file__, 0, text, None, None)
        record.__dict__.update(fields, event=event)
        handler.handle(record)
        return
    line = f"error: {text}" if level >= logging.ERROR else text
    if write is None:
        click.echo(line, err=True)
    else:
        write(line)


def _keep_http_backend(ctx: click.Context, param: click.Parameter, value: str) -> str:
    ctx.meta[_HTTP_BACKEND_KEY] = value
    return value


def http_backend_option(command: F) -> F:
    """--http-backend {aiohttp,reqwest}: the HTTP stack of the command's client.

    Not passed to the command: `make_client` (and the demo, through `http_backend`) reads it,
    so every command with `api_options` takes it without a parameter of its own.
    """
    return click.option(
        "--http-backend",
        type=click.Choice(HTTP_BACKENDS),
        default="aiohttp",
        envvar="OSVI_HTTP_BACKEND",
        show_envvar=True,  # also names the variable in the error for a bad value in it
        show_default=True,
        expose_value=False,
        callback=_keep_http_backend,
        help=_HTTP_BACKEND_HELP,
    )(command)


def http_backend() -> HttpBackend:
    """The --http-backend of the running command ("aiohttp" outside one)."""
    return "reqwest" if _chosen(_HTTP_BACKEND_KEY) == "reqwest" else "aiohttp"


def api_options(command: F) -> F:
    """--token, --base-url, --timeout and --http-backend, the same on every command that
    calls the API."""
    command = http_backend_option(command)
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
