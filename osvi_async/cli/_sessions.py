"""`osvi-async session create|get|close`, `message send` and `support`: one API call each.

Each command builds the client, runs one coroutine and prints the result (lines for a person,
or `--json`); errors are one line (see `_common`). Blank ids are refused when the arguments
are parsed (exit 2), before a client exists. A lookup by customer and agent that finds no
active session exits 4, so a script can tell "none" from "failed" (1) and create one. A
create or send that may have been applied is exit 1 with the SDK's message, which says how to
check before trying again (look the active session up): neither call is safe to repeat.
"""

# ruff: noqa: PLR0917 - click passes options as parameters

from __future__ import annotations

from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, Final, TypeVar, cast

import click

from osvi_async import (
    ChatSession,
    MessageReply,
    NotFoundError,
    OsviError,
    SupportCommand,
    SupportResult,
)
from osvi_async.cli._common import (
    EXIT_NO_ACTIVE_SESSION,
    Check,
    Output,
    api_options,
    before_sending,
    check_by_customer,
    check_by_session,
    error_exit,
    json_option,
    make_client,
    no_active_session,
    non_blank,
    run_coroutine,
)
from osvi_async.cli._show import (
    dumps,
    reply_json,
    reply_lines,
    session_json,
    session_lines,
    support_json,
    support_lines,
)

T = TypeVar("T")

SUPPORT_COMMANDS: Final = ("takeover", "tell", "whisper", "end", "close")


def _blank_argument(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An argument that must hold more than whitespace (a session id, a message)."""
    if not value.strip():
        raise click.BadParameter("must not be blank", ctx=ctx, param=param)
    return value


def _input_fields(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """`--input-field key=value`, repeatable: a dict of strings; a key given twice is refused."""
    fields: dict[str, str] = {}
    for item in values:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx=ctx, param=param)
        if key in fields:
            raise click.BadParameter(f"{key!r} is given twice", ctx=ctx, param=param)
        fields[key] = value
    return fields


@click.group()
def session() -> None:
    """Create, look up and close chat sessions."""


@session.command("create")
@click.option("--agent", "agent_uuid", required=True, callback=non_blank, help="Agent uuid.")
@click.option("--customer", "customer_id", required=True, callback=non_blank, help="Customer id.")
@click.option(
    "--input-field",
    "input_fields",
    multiple=True,
    callback=_input_fields,
    metavar="KEY=VALUE",
    help="An input field of the session (repeatable; values are strings).",
)
@click.option("--context", "context", multiple=True, help="An initial context entry (repeatable).")
@api_options
@json_option
def create(
    agent_uuid: str,
    customer_id: str,
    input_fields: dict[str, str],
    context: tuple[str, ...],
    token: str | None,
    base_url: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Open a session for the customer with the agent and print it.

    This closes the customer's active session with that agent, if any, so it is never
    retried once it may have reached the API: after such a failure (exit 1, "may have been
    applied"), look the session up with `session get` before creating another.
    """

    check = check_by_customer(customer_id, agent_uuid)

    async def call() -> ChatSession:
        async with make_client(token, base_url, timeout) as client:
            before_sending(check)
            return await client.create_session(
                agent_uuid,
                customer_id,
                input_fields=input_fields or None,
                context=list(context) or None,
            )

    output = Output(token)
    created = _run(call(), output, check=check)
    if as_json:
        output.json(dumps(session_json(created)))
    else:
        _print(output, session_lines(created, agent_uuid=agent_uuid))


@session.command("get")
@click.option("--customer", "customer_id", required=True, callback=non_blank, help="Customer id.")
@click.option(
    "--agent", "agent_uuid", callback=non_blank, help="Agent uuid (default: every agent)."
)
@api_options
@json_option
def get(
    customer_id: str,
    agent_uuid: str | None,
    token: str | None,
    base_url: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Print the customer's active session with --agent, or every active session of theirs.

    None active: exit 4 with one line (nothing on stdout).
    """

    async def call() -> Mapping[str, ChatSession]:
        async with make_client(token, base_url, timeout) as client:
            if agent_uuid is None:
                return await client.get_active_sessions(customer_id)
            return {agent_uuid: await client.get_active_session(customer_id, agent_uuid)}

    output = Output(token)
    none_active = no_active_session(customer_id, agent_uuid)
    try:
        found = run_coroutine(call())
    except NotFoundError:
        raise output.fail(none_active, EXIT_NO_ACTIVE_SESSION) from None
    except OsviError as error:
        raise error_exit(error, output) from None
    if not found:
        raise output.fail(none_active, EXIT_NO_ACTIVE_SESSION)
    if as_json:
        if agent_uuid is not None:
            output.json(dumps(session_json(found[agent_uuid])))
        else:
            shown = {agent: session_json(active) for agent, active in found.items()}
            output.json(dumps({"customer_id": customer_id, "sessions": shown}))
        return
    for number, (agent, active) in enumerate(sorted(found.items())):
        if number:
            output.line()
        _print(output, session_lines(active, agent_uuid=agent))


@session.command("close")
@click.argument("session_id", callback=_blank_argument)
@api_options
@json_option
def close(
    session_id: str, token: str | None, base_url: str | None, timeout: float, as_json: bool
) -> None:
    """Close session SESSION_ID (the support `close` command); exit 1 if it is not active."""

    check = check_by_session(session_id)

    async def call() -> SupportResult:
        async with make_client(token, base_url, timeout) as client:
            before_sending(check)
            return await client.close_session(session_id)

    output = Output(token)
    result = _run(call(), output, check=check)
    if as_json:
        output.json(dumps(support_json(result)))
    else:
        output.line(f"closed session {result.session_id} ({result.state})")


@click.group()
def message() -> None:
    """Send a customer's message to an agent."""


@message.command("send")
@click.argument("content", metavar="TEXT", callback=_blank_argument)
@click.option("--agent", "agent_uuid", required=True, callback=non_blank, help="Agent uuid.")
@click.option("--customer", "customer_id", required=True, callback=non_blank, help="Customer id.")
@click.option(
    "--session-id",
    callback=non_blank,
    help="Send to this session (default: the customer's active one, opened if none).",
)
@api_options
@json_option
def send(
    content: str,
    agent_uuid: str,
    customer_id: str,
    session_id: str | None,
    token: str | None,
    base_url: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Send TEXT as the customer's message and print the agent's reply.

    This runs an agent turn, so it is never retried once it may have reached the API: after
    such a failure (exit 1, "may have been applied"), check the session before sending again.
    """

    check = check_by_customer(customer_id, agent_uuid)

    async def call() -> MessageReply:
        async with make_client(token, base_url, timeout) as client:
            before_sending(check)
            return await client.send_message(
                agent_uuid, customer_id, content, session_id=session_id
            )

    output = Output(token)
    reply = _run(call(), output, check=check)
    if as_json:
        output.json(dumps(reply_json(reply)))
    else:
        _print(output, reply_lines(reply))


@click.command()
@click.argument("session_id", callback=_blank_argument)
@click.argument("command", required=False, type=click.Choice(SUPPORT_COMMANDS))
@click.option(
    "--message",
    "text",
    callback=non_blank,
    help="Text for the customer (tell, plain, takeover/end/close); whisper: the private note.",
)
@api_options
@json_option
def support(
    session_id: str,
    command: str | None,
    text: str | None,
    token: str | None,
    base_url: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Run a support COMMAND on SESSION_ID, or send an operator --message (no COMMAND).

    \b
    takeover  an operator takes the session (support mode)
    tell      the agent tells the customer --message
    whisper   --message is a private note only the agent sees (guidance for its next turn)
    end       hand the session back to the agent
    close     close the session for good
    (none)    --message is a plain operator message to the customer (support mode only)

    --message is required for tell, whisper and a plain message. With takeover, end or close it
    is optional and is SHOWN TO THE CUSTOMER: the command is then sent at most once (never
    retried after a failure that may have been applied, which could show it twice), as are
    tell and a plain message. Without a message, takeover, end and close are retried like
    reads (a repeat sets the same state); whisper is retried even after such failures, so a
    note may land twice (flagged possible_duplicate).
    """
    if text is None and command in (None, "tell", "whisper"):
        what = command or "a plain operator message (no COMMAND)"
        raise click.UsageError(f"--message is required for {what}")

    # whisper is retried after an attempt that may have been applied (the append class).
    check = check_by_session(session_id, repeats=command == "whisper")

    async def call() -> SupportResult:
        async with make_client(token, base_url, timeout) as client:
            before_sending(check)
            # click.Choice admitted only the commands SupportCommand names.
            return await client.support(session_id, cast("SupportCommand | None", command), text)

    output = Output(token)
    result = _run(call(), output, check=check)
    if as_json:
        output.json(dumps(support_json(result)))
    else:
        _print(output, support_lines(result))


def _run(coroutine: Coroutine[Any, Any, T], output: Output, *, check: Check) -> T:
    """Run the call; an SDK error becomes its one line and exit code (see `error_exit`)."""
    try:
        return run_coroutine(coroutine)
    except OsviError as error:
        raise error_exit(error, output, check=check) from None


def _print(output: Output, lines: Iterable[str]) -> None:
    for line in lines:
        output.line(line)
