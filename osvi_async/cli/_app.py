"""The `osvi-async` commands: parse arguments, build the client, run one coroutine, map errors.

Exit codes: 0 success; 1 the API refused or failed (for `bulk`: an item failed or was held);
2 usage errors and invalid input; 3 the API could not be reached; 130 interrupted (SIGINT);
143 stopped by SIGTERM. Errors are one line on stderr, never a traceback, and never contain
the token.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Final, TypeVar, cast

import click
from rich.console import Console

from osvi_async import (
    APIConnectionError,
    APIStatusError,
    ClientValidationError,
    OsviClient,
    OsviError,
)
from osvi_async.cli import install_stop_handlers
from osvi_async.cli._bulk_io import (
    InputError,
    InputFormat,
    Record,
    detect_format,
    input_lines,
    open_regular_file,
    open_text,
    read_first_line,
    read_records,
)
from osvi_async.cli._bulk_run import BulkCounts, run_bulk
from osvi_async.cli._demo import DemoSettings, run_demo
from osvi_async.cli._options import MAX_CONCURRENCY, FiniteFloat, usage_line
from osvi_async.cli._progress import BulkProgress, logs_on
from osvi_async.cli._report import (
    InputIdentity,
    ReportError,
    ReportState,
    ReportWriter,
    identify_input,
    open_report,
)
from osvi_async.cli._signals import GracefulStop

T = TypeVar("T")

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3

_TOKEN_HELP: Final = "API token; defaults to $OSVI_API_TOKEN. Never printed."  # noqa: S105
_URL_HELP: Final = "API root; defaults to $OSVI_BASE_URL, then https://api.osvi.ai."


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
    if not token:
        raise _fail("no API token: pass --token or set OSVI_API_TOKEN", EXIT_USAGE)
    try:
        return OsviClient(token, base_url=base_url, timeout=timeout)
    except ClientValidationError as error:
        raise _error_exit(error) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="osvi-async")
def main() -> None:
    """osvi-async: inject context into OSVI chat sessions from the command line."""


def run(args: Sequence[str] | None = None) -> int:
    """Run a command; returns its exit code. Usage errors are one line on stderr (exit 2)."""
    try:
        code = main.main(args, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as error:
        error.show()  # `osvi-async` alone: the help text, as click prints it
        return error.exit_code
    except click.UsageError as error:
        click.echo(usage_line(error), err=True)
        return EXIT_USAGE
    except click.ClickException as error:
        click.echo(f"error: {' '.join(error.format_message().split())}", err=True)
        return error.exit_code
    except click.Abort:
        click.echo("error: aborted", err=True)
        return EXIT_FAILED
    return code if isinstance(code, int) else 0


_TIMEOUT: Final = FiniteFloat(min=0, min_open=True)


@main.command()
@click.argument("session_id")
@click.argument("text")
@click.option("--token", envvar="OSVI_API_TOKEN", show_envvar=False, help=_TOKEN_HELP)
@click.option("--base-url", envvar="OSVI_BASE_URL", show_envvar=False, help=_URL_HELP)
@click.option("--timeout", type=_TIMEOUT, default=30.0)
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
    if as_json:
        click.echo(json.dumps({"session_id": session_id, "context": list(bucket)}))
    else:
        for number, entry in enumerate(bucket, start=1):
            click.echo(f"{number}. {entry}")


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=MAX_CONCURRENCY),
    default=64,
    show_default=True,
    help="Requests in flight at most.",
)
@click.option("--rate", type=FiniteFloat(min=0, min_open=True), help="Max requests/s.")
@click.option("--report", type=click.Path(path_type=Path), help="JSONL report.")
@click.option("--resume", is_flag=True, help="Continue the run --report journals.")
@click.option(
    "--grace",
    type=FiniteFloat(min=0, allow_inf=True),
    default=10.0,
    show_default=True,
    help="Seconds in-flight items get to finish after SIGINT or SIGTERM (inf: wait).",
)
@click.option("--format", "input_format", type=click.Choice(["auto", "jsonl", "csv"]))
@click.option("--token", envvar="OSVI_API_TOKEN", show_envvar=False, help=_TOKEN_HELP)
@click.option("--base-url", envvar="OSVI_BASE_URL", show_envvar=False, help=_URL_HELP)
@click.option("--timeout", type=_TIMEOUT, default=30.0)
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
        limit = client.max_context_bytes
        first = read_first_line(stream, limit)
        fmt: InputFormat = (
            detect_format(input_path, first)
            if input_format in (None, "auto")
            else cast("InputFormat", input_format)
        )
        try:
            lines = input_lines(stream, fmt, limit, first=first)
            records = read_records(lines, fmt, max_context_bytes=limit)
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
        stop = GracefulStop(grace, notice=lambda text: _print_line(console, text))
        try:
            with (
                BulkProgress(console, counts, to_send, description="injecting") as progress,
                logs_on(console),
            ):
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
    failure = writer.failure if writer is not None else None
    if failure is None:
        _print_line(console, counts.summary(stop))
        code = counts.exit_code(stop)
    else:
        _print_line(console, counts.summary(stop, stopped_by="a failed report write (at once)"))
        click.echo(
            f"error: cannot write report {report}: {failure.strerror or failure}; "
            "the run stopped at once. "
            "Free some space, then run again with --resume",
            err=True,
        )
        code = counts.exit_code(stop) or EXIT_FAILED
    if code:
        raise click.exceptions.Exit(code)


def _print_line(console: Console, text: str) -> None:
    """Print `text` as one line, however narrow the console (80 columns in a CI log or pipe).

    Scripts and people grep these lines (the summary, "stopping"): rich would wrap them.
    """
    console.print(text, soft_wrap=True, markup=False, highlight=False)


def _identify(input_path: str, fmt: InputFormat, limit: int) -> InputIdentity | None:
    """The input's SHA-256 and record count, in one pass (None for stdin: read only once)."""
    if input_path == "-":
        return None

    def count(text: IO[str]) -> int:
        try:
            lines = input_lines(text, fmt, limit, first=read_first_line(text, limit))
            return sum(1 for _ in read_records(lines, fmt, max_context_bytes=limit))
        except InputError:
            return 0

    try:
        return identify_input(open_regular_file(Path(input_path)), count)
    except InputError as error:
        raise _fail(str(error), EXIT_USAGE) from None
    except OSError as error:
        raise _fail(f"cannot read {input_path}: {error.strerror}", EXIT_USAGE) from None


def _open_report(
    report: Path | None, identity: InputIdentity | None, *, resume: bool
) -> tuple[ReportState | None, ReportWriter | None]:
    """Open, lock and check the report (see `open_report`), then print its warnings.

    Returns what --resume reads from it (None without --resume) and the writer (None without
    --report). Any problem is exit 2 with one line, before anything is sent or written.
    """
    if report is None:
        return None, None
    try:
        state, writer = open_report(report, identity, resume=resume)
    except ReportError as error:
        raise _fail(str(error), EXIT_USAGE) from None
    for warning in state.warnings:
        click.echo(warning, err=True)
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
@click.option("--sessions", type=click.IntRange(min=1, max=100_000), default=300, show_default=True)
@click.option(
    "--entries", type=click.IntRange(min=1, max=1_000_000), default=6000, show_default=True
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=MAX_CONCURRENCY),
    default=64,
    show_default=True,
)
@click.option("--seed", type=int, default=42, show_default=True)
def demo(sessions: int, entries: int, concurrency: int, seed: int) -> None:
    """Bulk-inject into the embedded emulator under faults, then verify every entry."""
    console = Console()
    settings = DemoSettings(sessions=sessions, entries=entries, concurrency=concurrency, seed=seed)
    verified = run_coroutine(run_demo(settings, console))
    if not verified:
        raise click.exceptions.Exit(EXIT_FAILED)
