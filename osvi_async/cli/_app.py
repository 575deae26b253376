"""The `osvi-async` commands: parse arguments, build the client, run one coroutine, map errors.

Exit codes (see `_common`): 0 success; 1 the API refused or failed (for `bulk`: an item failed
or was held); 2 usage errors and invalid input; 3 the API could not be reached; 4 no active
session for that customer and agent; 130 interrupted (SIGINT); 143 stopped by SIGTERM. Errors
are one line on stderr, never a traceback, and never contain the token.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from logging import ERROR
from pathlib import Path
from typing import IO, Literal, cast

import click
from rich.console import Console

from osvi_async import (
    ClientValidationError,
    InjectContextResult,
    NotFoundError,
    OsviClient,
    OsviError,
)
from osvi_async._adaptive import DEFAULT_MAX_CONCURRENCY
from osvi_async.cli import request_started
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
from osvi_async.cli._common import (
    EXIT_FAILED,
    EXIT_NO_ACTIVE_SESSION,
    EXIT_USAGE,
    Output,
    api_options,
    before_sending,
    check_by_customer,
    check_by_session,
    choose_loop,
    chosen_loop,
    configure_logs,
    error_exit,
    fail,
    http_backend,
    http_backend_option,
    json_option,
    log_options,
    loop_option,
    make_client,
    no_active_session,
    non_blank,
    run_coroutine,
    stderr_line,
)
from osvi_async.cli._dead_letters import dead_letters
from osvi_async.cli._options import MAX_CONCURRENCY, Concurrency, FiniteFloat, usage_line
from osvi_async.cli._output import OutputError, guard_stdout, visible
from osvi_async.cli._progress import BulkProgress, logs_on
from osvi_async.cli._publish import publish
from osvi_async.cli._report import (
    InputIdentity,
    ReportError,
    ReportState,
    ReportWriter,
    identify_input,
    open_report,
)
from osvi_async.cli._sessions import message, session, support
from osvi_async.cli._signals import GracefulStop
from osvi_async.cli._worker_cmd import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="osvi-async")
@loop_option
@log_options
def main(event_loop: str, log_level: str | None, log_format: str) -> None:
    """osvi-async: OSVI chat sessions, messages and context from the command line."""
    choose_loop(event_loop)
    configure_logs(log_level, log_format)


main.add_command(session)
main.add_command(message)
main.add_command(support)
main.add_command(publish)
main.add_command(worker)
main.add_command(dead_letters)


def run(args: Sequence[str] | None = None) -> int:
    """Run a command; returns its exit code. Every error is one line on stderr, never a trace.

    Usage errors are exit 2. Output that cannot be written (a full disk, a closed stdout) is
    `error: cannot write output: REASON`, exit 1; a reader that went away (EPIPE, as with
    `| head -c1`) is exit 1 without a line, as Unix tools do. Anything unexpected is
    `error: internal error: TYPE: MESSAGE` (the token redacted), exit 1.
    """
    guard_stdout()
    try:
        code = _run_click(args)
        sys.stdout.flush()  # a failure shows now, while it can still be reported
    except OutputError as error:
        if not error.broken_pipe:
            # Results go to stdout only after the call returned: if it changed something,
            # that is done; a script must not send it again because the printing failed.
            done = "; the request itself went through" if request_started() else ""
            stderr_line(f"cannot write output: {error.reason}{done}", event="error", level=ERROR)
        return EXIT_FAILED
    except Exception as error:  # the last resort: one line, never a traceback
        text = Output(_given_token(args), results=False).redact(visible(str(error)))
        stderr_line(f"internal error: {type(error).__name__}: {text}", event="error", level=ERROR)
        return EXIT_FAILED
    return code


def _run_click(args: Sequence[str] | None) -> int:
    """Run the command through click; its usage errors and exits as one line and a code."""
    try:
        code = main.main(args, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as error:
        error.show()  # `osvi-async` alone: the help text, as click prints it
        return error.exit_code
    except click.UsageError as error:
        click.echo(usage_line(error), err=True)
        return EXIT_USAGE
    except click.ClickException as error:
        stderr_line(visible(error.format_message()), event="error", level=ERROR)
        return error.exit_code
    except click.Abort:
        stderr_line("aborted", event="error", level=ERROR)
        return EXIT_FAILED
    return code if isinstance(code, int) else 0


def _given_token(args: Sequence[str] | None) -> str | None:
    """The token this command was given (`--token`, else $OSVI_API_TOKEN), for redaction."""
    words = list(sys.argv[1:] if args is None else args)
    for number, word in enumerate(words):
        if word == "--token" and number + 1 < len(words):
            return words[number + 1]
        if word.startswith("--token="):
            return word.removeprefix("--token=")
    return os.environ.get("OSVI_API_TOKEN") or None


@main.command()
@click.argument("arguments", nargs=-1, metavar="[SESSION_ID] TEXT")
@click.option("--customer", "customer_id", callback=non_blank, help="Customer id (with --agent).")
@click.option("--agent", "agent_uuid", callback=non_blank, help="Agent uuid (with --customer).")
@api_options
@json_option
def inject(
    arguments: tuple[str, ...],
    customer_id: str | None,
    agent_uuid: str | None,
    token: str | None,
    base_url: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Append TEXT to a session's context and print the session's context bucket.

    Address the session by its id (`inject SESSION_ID TEXT`) or by the customer and agent
    whose active session it is (`inject --customer C --agent A TEXT`). No active session for
    that customer and agent: exit 4.
    """
    by_customer = customer_id is not None or agent_uuid is not None
    _check_inject_arguments(
        arguments, by_customer=by_customer, both=None not in (customer_id, agent_uuid)
    )
    text = arguments[-1]
    output = Output(token)
    if customer_id is not None and agent_uuid is not None:
        check = check_by_customer(customer_id, agent_uuid, repeats=True)
    else:
        check = check_by_session(arguments[0], repeats=True)

    async def send() -> InjectContextResult:
        async with make_client(token, base_url, timeout) as client:
            before_sending(check)
            if customer_id is not None and agent_uuid is not None:
                return await client.inject_context_for_customer(customer_id, agent_uuid, text)
            return await client.inject_context(arguments[0], text)

    try:
        result = run_coroutine(send())
    except NotFoundError as error:
        if by_customer and not error.may_have_been_applied:  # else: exit 1, saying so
            message = no_active_session(customer_id or "", agent_uuid)
            raise output.fail(message, EXIT_NO_ACTIVE_SESSION) from None
        raise error_exit(error, output, check=check) from None
    except OsviError as error:
        raise error_exit(error, output, check=check) from None
    if as_json:
        shown: dict[str, object] = {"session_id": result.session_id}
        if by_customer:
            shown |= {"customer_id": customer_id, "agent_uuid": agent_uuid}
        output.json(json.dumps(shown | {"context": list(result.context)}))
    else:
        for number, entry in enumerate(result.context, start=1):
            output.line(f"{number}. {entry}")


def _check_inject_arguments(arguments: tuple[str, ...], *, by_customer: bool, both: bool) -> None:
    """`inject` takes SESSION_ID TEXT, or --customer C --agent A TEXT: anything else is exit 2."""
    either = "give SESSION_ID TEXT, or --customer C --agent A TEXT"
    if by_customer and not both:
        raise click.UsageError("--customer and --agent go together: give both")
    if by_customer and len(arguments) == 2:
        raise click.UsageError("give SESSION_ID or --customer and --agent, not both")
    wanted = 1 if by_customer else 2
    if len(arguments) < wanted:
        missing = "SESSION_ID" if not arguments and not by_customer else "TEXT"
        raise click.UsageError(f"Missing argument '{missing}': {either}")
    if len(arguments) > wanted:
        extra = " ".join(arguments[wanted:])
        raise click.UsageError(f"got unexpected extra argument(s) ({extra}): {either}")


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.option(
    "--concurrency",
    type=Concurrency(),
    default=64,
    show_default=True,
    help="Requests in flight at most, or auto: adapt to the API's capacity.",
)
@click.option(
    "--max-concurrency",
    type=click.IntRange(min=1, max=MAX_CONCURRENCY),
    help=f"With --concurrency auto: most requests in flight. [default: {DEFAULT_MAX_CONCURRENCY}]",
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
@api_options
def bulk(
    input_path: str,
    concurrency: int | Literal["auto"],
    max_concurrency: int | None,
    rate: float | None,
    report: Path | None,
    resume: bool,
    grace: float,
    input_format: str | None,
    token: str | None,
    base_url: str | None,
    timeout: float,
) -> None:
    """Inject every item of INPUT (JSON Lines or CSV; - for stdin).

    Each item names a `context` and either its `session_id`, or the `customer_id` and
    `agent_uuid` whose active session it goes to (see docs/cli.md for the row format).

    SIGINT (Ctrl+C) or SIGTERM stops it gracefully: nothing new is sent, items in flight get
    --grace seconds to finish, the report and summary are written (exit 130 or 143). A
    second signal stops at once.
    """
    max_concurrency = _most_in_flight(concurrency, max_concurrency)
    if resume and report is None:
        raise fail("--resume needs --report FILE", EXIT_USAGE)
    if resume and input_path == "-":
        raise fail(
            "--resume needs INPUT as a file: stdin cannot be checked against the report",
            EXIT_USAGE,
        )
    try:
        stream = open_text(input_path)
    except InputError as error:
        raise fail(str(error), EXIT_USAGE) from None
    with stream:
        most = concurrency if max_concurrency is None else max_concurrency
        client = make_client(token, base_url, timeout, concurrency=cast("int", most))
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
            raise fail(str(error), EXIT_USAGE) from None
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
                        max_concurrency=max_concurrency,
                        rate=rate,
                        stop=stop,
                    )
                )
        except OSError as error:
            raise fail(f"cannot write report {report}: {error.strerror}", EXIT_USAGE) from None
        finally:
            if writer is not None:
                writer.close()
    failure = writer.failure if writer is not None else None
    if failure is None:
        _print_line(console, counts.summary(stop), event="summary")
        code = counts.exit_code(stop)
    else:
        summary = counts.summary(stop, stopped_by="a failed report write (at once)")
        _print_line(console, summary, event="summary")
        stderr_line(
            f"cannot write report {report}: {failure.strerror or failure}; "
            "the run stopped at once. "
            "Free some space, then run again with --resume",
            event="error",
            level=ERROR,
        )
        code = counts.exit_code(stop) or EXIT_FAILED
    if code:
        raise click.exceptions.Exit(code)


def _print_line(console: Console, text: str, *, event: str = "notice") -> None:
    """Print `text` as one line, however narrow the console (80 columns in a CI log or pipe);
    with `--log-format json`, as a JSON record named `event`.

    Scripts and people grep these lines (the summary, "stopping"): rich would wrap them.
    """
    stderr_line(
        text,
        event=event,
        write=lambda line: console.print(line, soft_wrap=True, markup=False, highlight=False),
    )


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
        raise fail(str(error), EXIT_USAGE) from None
    except OSError as error:
        raise fail(f"cannot read {input_path}: {error.strerror}", EXIT_USAGE) from None


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
        raise fail(str(error), EXIT_USAGE) from None
    for warning in state.warnings:
        click.echo(warning, err=True)
    return (state if resume else None), writer


def _most_in_flight(concurrency: int | Literal["auto"], max_concurrency: int | None) -> int | None:
    """`--max-concurrency` as the run takes it: the default with auto, refused without."""
    if concurrency != "auto":
        if max_concurrency is not None:
            raise fail("--max-concurrency goes with --concurrency auto", EXIT_USAGE)
        return None
    return DEFAULT_MAX_CONCURRENCY if max_concurrency is None else max_concurrency


async def _bulk_main(
    client: OsviClient,
    records: Iterable[Record],
    *,
    writer: ReportWriter | None,
    resume: ReportState | None,
    counts: BulkCounts,
    progress: BulkProgress,
    concurrency: int | Literal["auto"],
    max_concurrency: int | None,
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
                max_concurrency=max_concurrency,
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

    sys.exit(serve_main(list(args), prog="osvi-async serve", event_loop=chosen_loop()))


@main.command()
@click.option("--sessions", type=click.IntRange(min=1, max=100_000), default=300, show_default=True)
@click.option(
    "--entries", type=click.IntRange(min=1, max=1_000_000), default=6000, show_default=True
)
@click.option(
    "--concurrency",
    type=Concurrency(),
    default=64,
    show_default=True,
    help="Requests in flight at most, or auto (adapts, up to 256).",
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--capacity",
    type=click.IntRange(min=1),
    default=None,
    help="Requests the emulator serves at once (5 ms each, a queue as deep, then 429).",
)
@http_backend_option
def demo(
    sessions: int,
    entries: int,
    concurrency: int | Literal["auto"],
    seed: int,
    capacity: int | None,
) -> None:
    """Bulk-inject into the embedded emulator under faults, then verify every entry."""
    # Imported here: the emulator (aiohttp.web) is a third of the CLI's start-up otherwise.
    from osvi_async.cli._demo import DemoSettings, run_demo  # noqa: PLC0415

    console = Console()
    settings = DemoSettings(
        sessions=sessions,
        entries=entries,
        concurrency=concurrency,
        seed=seed,
        http_backend=http_backend(),
        capacity=capacity,
    )
    try:
        verified = run_coroutine(run_demo(settings, console))
    except ClientValidationError as error:  # reqwest without pyreqwest
        raise error_exit(error) from None
    if not verified:
        raise click.exceptions.Exit(EXIT_FAILED)
