"""The `osvi-async` commands: parse arguments, build the client, run one coroutine, map errors.

Exit codes: 0 success; 1 the API refused or failed (for `bulk`: an item failed or was held);
2 usage errors and invalid input; 3 the API could not be reached; 130 interrupted (SIGINT);
143 stopped by SIGTERM. Errors are one line on stderr, never a traceback, and never contain
the token.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import sys
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import IO, Any, Final, ParamSpec, TypeVar, cast

import click
from rich.console import Console

from osvi_async import (
    APIConnectionError,
    APIStatusError,
    ClientValidationError,
    OsviClient,
    OsviError,
)
from osvi_async.cli._bulk_io import (
    InputError,
    InputFormat,
    Record,
    detect_format,
    open_text,
    read_records,
)
from osvi_async.cli._bulk_run import BulkCounts, run_bulk
from osvi_async.cli._demo import DemoSettings, run_demo
from osvi_async.cli._progress import BulkProgress
from osvi_async.cli._report import (
    InputIdentity,
    ReportState,
    ReportWriter,
    identify_input,
    read_report,
)
from osvi_async.cli._signals import (
    GracefulStop,
    exit_code,
    interrupt_signal,
    signal_name,
    terminate_like_interrupt,
)

T = TypeVar("T")
P = ParamSpec("P")

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_INTERRUPTED: Final = 130

_TOKEN_HELP: Final = "API token; defaults to $OSVI_API_TOKEN. Never printed."  # noqa: S105
_URL_HELP: Final = "API root; defaults to $OSVI_BASE_URL, then https://api.osvi.ai."


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (the `fast` extra), else on asyncio's own loop."""
    try:
        import uvloop  # noqa: PLC0415 - optional: the `fast` extra
    except ImportError:
        return asyncio.run(coroutine)
    result: T = uvloop.run(coroutine)  # typed as Any where uvloop is not installed
    return result


def _fail(message: str, code: int) -> click.exceptions.Exit:
    click.echo(f"error: {message}", err=True)
    return click.exceptions.Exit(code)


def _error_exit(error: OsviError) -> click.exceptions.Exit:
    """One line for a person, and the exit code for scripts."""
    if isinstance(error, ClientValidationError):
        return _fail(f"invalid input: {error}", EXIT_USAGE)
    if isinstance(error, APIStatusError):
        return _fail(f"{error.code or f'HTTP {error.status}'}: {error}", EXIT_FAILED)
    if isinstance(error, APIConnectionError):
        return _fail(f"{type(error).__name__}: {error}", EXIT_UNREACHABLE)
    return _fail(f"{type(error).__name__}: {error}", EXIT_FAILED)


def _client(token: str | None, base_url: str | None, timeout: float) -> OsviClient:
    try:
        return OsviClient(token, base_url=base_url, timeout=timeout)
    except ClientValidationError as error:
        raise _error_exit(error) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="osvi-async")
def main() -> None:
    """osvi-async: inject context into OSVI chat sessions from the command line."""


@main.command()
@click.argument("session_id")
@click.argument("text")
@click.option("--token", envvar="OSVI_API_TOKEN", show_envvar=False, help=_TOKEN_HELP)
@click.option("--base-url", envvar="OSVI_BASE_URL", show_envvar=False, help=_URL_HELP)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def inject(
    session_id: str,
    text: str,
    token: str | None,
    base_url: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Append TEXT to session SESSION_ID and print the session's context bucket."""

    async def send() -> tuple[str, ...]:
        async with _client(token, base_url, timeout) as client:
            result = await client.inject_context(session_id, text)
            return result.context

    try:
        bucket = run_coroutine(send())
    except OsviError as error:
        raise _error_exit(error) from None
    except KeyboardInterrupt:
        raise _fail("interrupted", EXIT_INTERRUPTED) from None
    if as_json:
        click.echo(json.dumps({"session_id": session_id, "context": list(bucket)}))
    else:
        for number, entry in enumerate(bucket, start=1):
            click.echo(f"{number}. {entry}")


def _stops_on_signals(command: Callable[P, None]) -> Callable[P, None]:
    """SIGINT or SIGTERM outside the run's own handlers: one line and exit 130 or 143."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        terminate_like_interrupt()  # a SIGTERM before the loop runs ends like Ctrl+C
        try:
            command(*args, **kwargs)
        except KeyboardInterrupt as interrupt:
            signum = interrupt_signal(interrupt)
            raise _fail(
                f"stopped by {signal_name(signum)}; run again with --resume to finish",
                exit_code(signum),
            ) from None

    return wrapper


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.option("--concurrency", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Max requests/s.")
@click.option("--report", type=click.Path(path_type=Path), help="JSONL report.")
@click.option("--resume", is_flag=True, help="Send only what the report lacks or left undone.")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds in-flight items get to finish after SIGINT or SIGTERM.",
)
@click.option("--format", "input_format", type=click.Choice(["auto", "jsonl", "csv"]))
@click.option("--token", envvar="OSVI_API_TOKEN", show_envvar=False, help=_TOKEN_HELP)
@click.option("--base-url", envvar="OSVI_BASE_URL", show_envvar=False, help=_URL_HELP)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0)
@_stops_on_signals
def bulk(
    input_path: str,
    concurrency: int,
    rate: float | None,
    report: Path | None,
    resume: bool,
    grace: float,
    input_format: str | None,
    token: str | None,
    base_url: str | None,
    timeout: float,
) -> None:
    """Inject every item of INPUT (JSON Lines or CSV with session_id,context; - for stdin).

    SIGINT (Ctrl+C) or SIGTERM stops it gracefully: nothing new is sent, items in flight get
    --grace seconds to finish, the report and summary are written (exit 130 or 143). A
    second signal stops at once.
    """
    if resume and report is None:
        raise _fail("--resume needs --report FILE", EXIT_USAGE)
    if resume and input_path == "-":
        raise _fail(
            "--resume needs INPUT as a file: stdin cannot be checked against the report",
            EXIT_USAGE,
        )
    try:
        stream = open_text(input_path)
    except InputError as error:
        raise _fail(str(error), EXIT_USAGE) from None
    with stream:
        client = _client(token, base_url, timeout)
        first = stream.readline()
        fmt: InputFormat = (
            detect_format(input_path, first)
            if input_format in (None, "auto")
            else cast("InputFormat", input_format)
        )
        limit = client.max_context_bytes
        try:
            records = read_records(itertools.chain([first], stream), fmt, max_context_bytes=limit)
        except InputError as error:
            raise _fail(str(error), EXIT_USAGE) from None
        identity = _identify(input_path, fmt, limit)
        state, writer = _open_report(report, identity, resume=resume)
        to_send = None
        if identity is not None:
            done, final = state.settled(identity.records) if state is not None else (0, 0)
            to_send = identity.records - done - final
        counts = BulkCounts(to_send=to_send)
        console = Console(stderr=True)
        stop = GracefulStop(grace, notice=console.print)
        try:
            with BulkProgress(console, counts, to_send, description="injecting") as progress:
                run_coroutine(
                    _bulk_main(
                        client,
                        records,
                        writer=writer,
                        resume=state,
                        counts=counts,
                        progress=progress,
                        concurrency=concurrency,
                        rate=rate,
                        stop=stop,
                    )
                )
        except OSError as error:
            raise _fail(f"cannot write report {report}: {error.strerror}", EXIT_USAGE) from None
        finally:
            if writer is not None:
                writer.close()
    console.print(counts.summary(stop))
    code = counts.exit_code(stop)
    if code:
        raise click.exceptions.Exit(code)


def _identify(input_path: str, fmt: InputFormat, limit: int) -> InputIdentity | None:
    """The input's SHA-256 and record count, in one pass (None for stdin: read only once)."""
    if input_path == "-":
        return None

    def count(text: IO[str]) -> int:
        try:
            return sum(1 for _ in read_records(text, fmt, max_context_bytes=limit))
        except InputError:
            return 0

    try:
        return identify_input(Path(input_path), count)
    except OSError as error:
        raise _fail(f"cannot read {input_path}: {error.strerror}", EXIT_USAGE) from None


def _open_report(
    report: Path | None, identity: InputIdentity | None, *, resume: bool
) -> tuple[ReportState | None, ReportWriter | None]:
    """Read (and repair) the report, check it belongs to this input, open it for appending.

    Returns what --resume reads from it (None without --resume) and the writer (None without
    --report). Any problem is exit 2 with one line, before anything is sent.
    """
    if report is None:
        return None, None
    try:
        state = read_report(report)
        for warning in state.warnings:
            click.echo(warning, err=True)
        writer = ReportWriter(report)
    except OSError as error:
        raise _fail(f"cannot use the report {report}: {error.strerror}", EXIT_USAGE) from None
    try:
        if writer.empty:
            writer.write_header(identity)
            return (state if resume else None), writer
    except OSError as error:
        writer.close()
        raise _fail(f"cannot write the report {report}: {error.strerror}", EXIT_USAGE) from None
    problem = state.problem_with(identity)
    if problem is not None:
        writer.close()
        raise _fail(f"the report {report} {problem}; use another --report path", EXIT_USAGE)
    return (state if resume else None), writer


async def _bulk_main(
    client: OsviClient,
    records: Iterable[Record],
    *,
    writer: ReportWriter | None,
    resume: ReportState | None,
    counts: BulkCounts,
    progress: BulkProgress,
    concurrency: int,
    rate: float | None,
    stop: GracefulStop,
) -> BulkCounts:
    with stop.installed():
        async with client:
            return await run_bulk(
                client,
                records,
                report=writer,
                resume=resume,
                counts=counts,
                progress=progress,
                concurrency=concurrency,
                rate_limit=rate,
                stop=stop,
            )


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,  # --help goes to the emulator's own parser, which lists its options
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def serve(args: tuple[str, ...]) -> None:
    """Serve the local emulator until Ctrl+C or SIGTERM (options: osvi-async serve --help)."""
    from osvi_async.testing import main as serve_main  # noqa: PLC0415 - loads aiohttp.web

    sys.exit(serve_main(list(args), prog="osvi-async serve"))


@main.command()
@click.option("--sessions", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--entries", type=click.IntRange(min=1), default=6000, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
def demo(sessions: int, entries: int, concurrency: int, seed: int) -> None:
    """Bulk-inject into the embedded emulator under faults, then verify every entry."""
    console = Console()
    settings = DemoSettings(sessions=sessions, entries=entries, concurrency=concurrency, seed=seed)
    try:
        verified = run_coroutine(run_demo(settings, console))
    except KeyboardInterrupt:
        raise _fail("interrupted", EXIT_INTERRUPTED) from None
    if not verified:
        raise click.exceptions.Exit(EXIT_FAILED)
