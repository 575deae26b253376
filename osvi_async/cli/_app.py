"""The `osvi-async` commands: parse arguments, build the client, run one coroutine, map errors.

Exit codes: 0 success; 1 the API refused or failed (for `bulk`: any item failed); 2 usage
errors and invalid input; 3 the API could not be reached; 130 interrupted. Errors are one line
on stderr, never a traceback, and never contain the token.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, Final, TypeVar, cast

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
    ReportWriter,
    detect_format,
    open_text,
    read_done,
    read_records,
)
from osvi_async.cli._bulk_run import BulkCounts, run_bulk
from osvi_async.cli._demo import DemoSettings, run_demo
from osvi_async.cli._progress import BulkProgress

T = TypeVar("T")

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


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.option("--concurrency", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Max requests/s.")
@click.option("--report", type=click.Path(path_type=Path), help="JSONL report.")
@click.option("--resume", is_flag=True, help="Skip items the report already marks ok.")
@click.option("--format", "input_format", type=click.Choice(["auto", "jsonl", "csv"]))
@click.option("--token", envvar="OSVI_API_TOKEN", show_envvar=False, help=_TOKEN_HELP)
@click.option("--base-url", envvar="OSVI_BASE_URL", show_envvar=False, help=_URL_HELP)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0)
def bulk(
    input_path: str,
    concurrency: int,
    rate: float | None,
    report: Path | None,
    resume: bool,
    input_format: str | None,
    token: str | None,
    base_url: str | None,
    timeout: float,
) -> None:
    """Inject every item of INPUT (JSON Lines or CSV with session_id,context; - for stdin)."""
    if resume and report is None:
        raise _fail("--resume needs --report FILE", EXIT_USAGE)
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
        if report is not None:
            _check_report_writable(report)
        done = read_done(report) if resume and report is not None else bytearray()
        console = Console(stderr=True)
        total = _count(input_path, fmt, limit)
        report_stream = report.open("a", encoding="utf-8") if report is not None else None
        try:
            writer = ReportWriter(report_stream) if report_stream is not None else None
            with BulkProgress(console, total, description="injecting") as progress:
                counts = run_coroutine(
                    _bulk_main(
                        client,
                        records,
                        writer=writer,
                        done=done,
                        progress=progress,
                        concurrency=concurrency,
                        rate=rate,
                    )
                )
        except KeyboardInterrupt:
            raise _fail(
                "interrupted; run again with --resume to finish", EXIT_INTERRUPTED
            ) from None
        finally:
            if report_stream is not None:
                report_stream.close()
    console.print(
        f"{counts.ok} ok, {counts.failed} failed, {counts.skipped} skipped (already done), "
        f"{counts.retries} retries"
    )
    if counts.failed:
        raise click.exceptions.Exit(EXIT_FAILED)


def _count(input_path: str, fmt: InputFormat, limit: int) -> int | None:
    """The progress bar's total: INPUT's records, malformed ones included (None for stdin)."""
    if input_path == "-":
        return None
    try:
        with open_text(input_path) as text:
            return sum(1 for _ in read_records(text, fmt, max_context_bytes=limit))
    except InputError:
        return None


def _check_report_writable(report: Path) -> None:
    """Refuse a report that cannot be appended to before anything is sent (creates it)."""
    try:
        with report.open("a", encoding="utf-8"):
            pass
    except OSError as error:
        raise _fail(f"cannot write the report {report}: {error.strerror}", EXIT_USAGE) from None


async def _bulk_main(
    client: OsviClient,
    records: Iterable[Record],
    *,
    writer: ReportWriter | None,
    done: bytearray,
    progress: BulkProgress,
    concurrency: int,
    rate: float | None,
) -> BulkCounts:
    async with client:
        return await run_bulk(
            client,
            records,
            report=writer,
            done=done,
            progress=progress,
            concurrency=concurrency,
            rate_limit=rate,
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
