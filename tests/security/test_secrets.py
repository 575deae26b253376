"""The API token never shows: not in logs at DEBUG, reprs, errors or their chains."""

from __future__ import annotations

import html
import json
import logging
import socket
import traceback
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from osvi_async import (
    APIConnectionError,
    AuthenticationError,
    EngineError,
    OsviClient,
    OsviError,
    ResponseDecodeError,
    RetryPolicy,
)
from osvi_async._config import ClientConfig
from osvi_async._transport import HttpBackend
from osvi_async.testing import FaultPlan, OsviEmulator
from tests.support import SESSION_ID, FakeSleep, exception_chain, inject_server

SECRET = "Sup3rS3cretT0ken"


def assert_secret_absent(error: BaseException) -> None:
    """Neither str, repr, attributes nor the formatted traceback of the chain show it."""
    for link in exception_chain(error):
        assert SECRET not in str(link)
        assert SECRET not in repr(link)
        assert SECRET not in repr(vars(link))
    assert SECRET not in "".join(traceback.format_exception(error))


async def test_debug_logs_of_a_troubled_run_never_show_the_token(
    caplog: pytest.LogCaptureFixture, http_backend: HttpBackend
) -> None:
    """Every logger at DEBUG through retries, failures and a bulk run: no token."""
    caplog.set_level(logging.DEBUG)
    async with OsviEmulator(api_token=SECRET) as emulator:
        sessions = [emulator.create_session() for _ in range(5)]
        emulator.fault_plan = FaultPlan(seed=1, engine_error=0.3, ambiguous_drop=0.1)
        policy = RetryPolicy(initial_delay=0.001, max_delay=0.002)
        async with OsviClient(
            SECRET, base_url=emulator.base_url, retry=policy, http_backend=http_backend
        ) as client:
            logging.getLogger("osvi_async").debug("client %r", client)
            async with client.inject_many(
                [(s, f"e{i}") for i, s in enumerate(sessions * 8)]
            ) as run:
                async for _ in run:
                    pass
    assert any(record.name == "osvi_async" for record in caplog.records)
    assert SECRET not in caplog.text


async def test_reprs_never_show_the_token(http_backend: HttpBackend) -> None:
    """Client, view, config, transport and emulator reprs leave the token out."""
    client = OsviClient(SECRET, base_url="http://127.0.0.1:9", http_backend=http_backend)
    view = client.with_options(timeout=1.0)
    config = ClientConfig.resolve(
        api_token=SECRET, base_url=None, timeout=1, retry=None, max_connections=1
    )
    emulator = OsviEmulator(api_token=SECRET)
    for thing in (client, view, config, client._transport, emulator):
        assert SECRET not in repr(thing)
        assert SECRET not in str(thing)


async def test_errors_from_every_path_never_show_the_token(http_backend: HttpBackend) -> None:
    """401, engine failure, dropped connection, refused connection, bad body: no token."""
    async with OsviEmulator() as emulator:
        session = emulator.create_session()
        errors: list[BaseException] = []
        async with OsviClient(
            SECRET, base_url=emulator.base_url, retry=RetryPolicy.none(), http_backend=http_backend
        ) as wrong_token:
            with pytest.raises(AuthenticationError) as denied:
                await wrong_token.inject_context(session, "x")
            errors.append(denied.value)
        async with OsviClient(
            emulator.api_token,
            base_url=emulator.base_url,
            retry=RetryPolicy.none(),
            http_backend=http_backend,
        ) as client:
            for fault, expected in [
                ("engine_error", EngineError),
                ("ambiguous_drop", APIConnectionError),
                ("proxy_html_502", EngineError),
            ]:
                emulator.fault_plan.script(session, [fault])
                with pytest.raises(expected) as caught:
                    await client.inject_context(session, "x")
                errors.append(caught.value)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with OsviClient(
        SECRET,
        base_url=f"http://127.0.0.1:{port}",
        retry=RetryPolicy.none(),
        http_backend=http_backend,
    ) as refused:
        with pytest.raises(APIConnectionError) as not_connected:
            await refused.inject_context(session, "x")
    errors.append(not_connected.value)
    errors.append(ResponseDecodeError("x", status=200, body=""))
    for error in errors:
        assert_secret_absent(error)


def test_bad_token_messages_do_not_echo_it() -> None:
    """A malformed token is described (length, characters), never quoted."""
    from osvi_async import ClientValidationError

    for bad in (SECRET + "x", SECRET[:-1], SECRET[:8] + " " + SECRET[9:]):
        with pytest.raises(ClientValidationError) as caught:
            OsviClient(bad)
        assert_secret_absent(caught.value)
        assert bad not in str(caught.value)


def echo_headers(request: web.Request) -> str:
    """The request headers as a proxy debug page would show them, one per line."""
    return "\n".join(f"{name}: {value}" for name, value in request.headers.items())


async def reflect_in_502_json(request: web.Request) -> web.Response:
    """A 502 whose `error` and `upstream_body` echo the request headers, token included."""
    await request.read()
    echoed = echo_headers(request)
    upstream = {
        "reason": echoed,
        "headers": dict(request.headers),
        "escaped": "\\u0053" + SECRET[1:],
    }
    return web.json_response(
        {"success": False, "error": echoed, "upstream_body": upstream}, status=502
    )


async def reflect_in_502_html(request: web.Request) -> web.Response:
    """A proxy's HTML 502 page that prints the request headers."""
    await request.read()
    return web.Response(text=f"<pre>{echo_headers(request)}</pre>", status=502)


async def reflect_in_200_garbage(request: web.Request) -> web.Response:
    """A 200 that is not JSON and echoes the headers."""
    await request.read()
    return web.Response(text=echo_headers(request), status=200)


async def reflect_in_200_session_id(request: web.Request) -> web.Response:
    """A 200 whose data.session_id is the echoed token."""
    await request.read()
    data = {"session_id": request.headers["API-Token"] + "\nforged", "context": ["x"]}
    return web.json_response({"success": True, "data": data})


async def reflect_in_200_session_id_past_the_cut(request: web.Request) -> web.Response:
    """A 200 whose data.session_id carries the token across the 60th character, where the
    message cuts the quoted id."""
    await request.read()
    data = {"session_id": "x" * 50 + request.headers["API-Token"], "context": ["x"]}
    return web.json_response({"success": True, "data": data})


@pytest.mark.parametrize(
    "handler",
    [
        reflect_in_502_json,
        reflect_in_502_html,
        reflect_in_200_garbage,
        reflect_in_200_session_id,
        reflect_in_200_session_id_past_the_cut,
    ],
)
async def test_a_server_echoing_the_token_never_gets_it_shown(
    handler: Callable[[web.Request], Awaitable[web.Response]],
    caplog: pytest.LogCaptureFixture,
    http_backend: HttpBackend,
) -> None:
    """Echoed headers (token, newlines): not in the error, its attributes, chain or the logs."""
    caplog.set_level(logging.DEBUG)
    policy = RetryPolicy(sleep=FakeSleep(), random=lambda: 0.5)
    async with (
        inject_server(handler) as base_url,
        OsviClient(SECRET, base_url=base_url, retry=policy, http_backend=http_backend) as client,
    ):
        with pytest.raises(OsviError) as caught:
            await client.inject_context(SESSION_ID, "x")
    error = caught.value
    assert_secret_absent(error)
    assert SECRET[:8] not in str(error) + repr(error)  # not even half of it
    attributes = [getattr(error, name, None) for name in ("body", "code", "upstream_body")]
    assert SECRET not in repr(attributes)
    assert "[REDACTED]" in str(error) + repr(attributes)
    assert "\n" not in str(error)
    assert SECRET not in caplog.text
    for record in caplog.records:
        if record.name == "osvi_async":
            assert "\n" not in record.getMessage()


HTML_SECRET = "Sup3r&S3cr<t'T0k"


async def reflect_html_escaped_in_502(request: web.Request) -> web.Response:
    """A proxy page that prints the headers through html.escape (`&amp;`, `&lt;`, `&#x27;`)."""
    await request.read()
    return web.Response(text=f"<pre>{html.escape(echo_headers(request))}</pre>", status=502)


async def reflect_in_200_bucket(request: web.Request) -> web.Response:
    """A 200 whose bucket echoes the token: plain, JSON-escaped and HTML-escaped."""
    await request.read()
    token = request.headers["API-Token"]
    escaped = "".join(f"\\u{ord(char):04x}" for char in token)
    context = [f"API-Token: {token}", html.escape(token), "x"]
    body = json.dumps({"success": True, "data": {"session_id": SESSION_ID, "context": context}})
    # JSON text with one entry written in \u escapes, as some servers do.
    return web.Response(
        text=body.replace('"x"', f'"{escaped}"'), content_type="application/json", status=200
    )


async def test_html_escaped_token_in_a_proxy_page_is_redacted(http_backend: HttpBackend) -> None:
    """A token with &, < and ' echoed through html.escape never shows in the error."""
    async with (
        inject_server(reflect_html_escaped_in_502) as base_url,
        OsviClient(
            HTML_SECRET, base_url=base_url, retry=RetryPolicy.none(), http_backend=http_backend
        ) as client,
    ):
        with pytest.raises(EngineError) as caught:
            await client.inject_context(SESSION_ID, "x")
    shown = str(caught.value) + repr(caught.value) + caught.value.body
    assert html.escape(HTML_SECRET) not in shown
    assert HTML_SECRET not in shown
    assert "[REDACTED]" in caught.value.body


async def test_a_success_echoing_the_token_does_not_show_it(http_backend: HttpBackend) -> None:
    """A 200 whose bucket holds the token (plain or escaped): the result never shows it."""
    async with (
        inject_server(reflect_in_200_bucket) as base_url,
        OsviClient(
            HTML_SECRET, base_url=base_url, retry=RetryPolicy.none(), http_backend=http_backend
        ) as client,
    ):
        result = await client.inject_context(SESSION_ID, "x")
    assert result.context == ("API-Token: [REDACTED]", "[REDACTED]", "[REDACTED]")
    assert HTML_SECRET not in repr(result)
