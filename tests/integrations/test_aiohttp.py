"""osvi_async.integrations.aiohttp: the cleanup context, the app key, and
examples/aiohttp_app.py under aiohttp's own runner (`web.run_app`), loaded and stopped with
SIGTERM."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from osvi_async import ClientValidationError
from osvi_async.integrations.aiohttp import (
    OSVI_CLIENT,
    CleanupContextNotInstalledError,
    get_osvi_client,
    osvi_client_context,
)
from osvi_async.testing import OsviEmulator
from tests.integrations._harness import (
    AGENT,
    CLIENTS,
    ExampleProcess,
    assert_clean_shutdown,
    run_web_example,
)


def _note_app(emulator: OsviEmulator) -> web.Application:
    """An app with the client's context and a route that injects its note, answering with
    the id of the client it used."""

    async def add_note(request: web.Request) -> web.Response:
        client = request.app[OSVI_CLIENT]
        await client.inject_context(request.match_info["session_id"], request.match_info["note"])
        return web.json_response({"client": id(client)})

    app = web.Application()
    app.router.add_post("/sessions/{session_id}/notes/{note}", add_note)
    app.cleanup_ctx.append(
        osvi_client_context(emulator.api_token, base_url=emulator.base_url, timeout=5.0)
    )
    return app


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site.port}"


async def test_handlers_share_the_app_keys_one_client_which_cleanup_closes(
    osvi_emulator: OsviEmulator,
) -> None:
    """20 concurrent requests get the same client; all land; the runner's cleanup closes it."""
    session_id = osvi_emulator.create_session()
    app = _note_app(osvi_emulator)
    runner, base_url = await _serve(app)
    notes = [f"note {n}" for n in range(20)]
    try:
        async with aiohttp.ClientSession() as http:

            async def post(note: str) -> int:
                async with http.post(f"{base_url}/sessions/{session_id}/notes/{note}") as reply:
                    assert reply.status == 200, await reply.text()
                    client_id: int = (await reply.json())["client"]
                    return client_id

            client_ids = await asyncio.gather(*(post(note) for note in notes))
        assert not app[OSVI_CLIENT].closed
    finally:
        await runner.cleanup()
    assert set(client_ids) == {id(app[OSVI_CLIENT])}
    assert sorted(osvi_emulator.applied(session_id)) == sorted(notes)
    assert app[OSVI_CLIENT].closed


async def test_contexts_appended_later_use_the_client_before_it_closes(
    osvi_emulator: OsviEmulator,
) -> None:
    """Cleanup contexts unwind in reverse: a later one sees the client open at both ends; an
    on_cleanup callback runs after it is closed."""
    seen: list[tuple[str, bool]] = []

    async def later(app: web.Application) -> AsyncIterator[None]:
        seen.append(("startup", app[OSVI_CLIENT].closed))
        yield
        seen.append(("cleanup", app[OSVI_CLIENT].closed))

    async def on_cleanup(app: web.Application) -> None:
        seen.append(("on_cleanup", app[OSVI_CLIENT].closed))

    app = _note_app(osvi_emulator)
    app.cleanup_ctx.append(later)
    app.on_cleanup.append(on_cleanup)
    runner, _ = await _serve(app)
    await runner.cleanup()
    assert seen == [("startup", False), ("cleanup", False), ("on_cleanup", True)]


async def _add_note(request: web.Request) -> web.Response:
    """Inject the path's note with get_osvi_client's client; answer with the client's id."""
    client = get_osvi_client(request)
    await client.inject_context(request.match_info["session_id"], request.match_info["note"])
    return web.json_response({"client": id(client)})


@web.middleware
async def _show_wiring_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer CleanupContextNotInstalledError as a 500 whose body is its type and message."""
    try:
        return await handler(request)
    except CleanupContextNotInstalledError as error:
        return web.Response(text=f"{type(error).__name__}: {error}", status=500)


async def test_a_sub_applications_handlers_get_the_outer_applications_client(
    osvi_emulator: OsviEmulator,
) -> None:
    """add_subapp: get_osvi_client finds the client of the parent's cleanup context through
    request.config_dict, and the notes land."""
    session_id = osvi_emulator.create_session()
    sub = web.Application()
    sub.router.add_post("/sessions/{session_id}/notes/{note}", _add_note)
    app = web.Application()
    app.cleanup_ctx.append(
        osvi_client_context(osvi_emulator.api_token, base_url=osvi_emulator.base_url)
    )
    app.add_subapp("/sub", sub)
    runner, base_url = await _serve(app)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{base_url}/sub/sessions/{session_id}/notes/from sub") as response,
        ):
            assert response.status == 200, await response.text()
            answer = await response.json()
    finally:
        await runner.cleanup()
    assert answer == {"client": id(app[OSVI_CLIENT])}
    assert osvi_emulator.applied(session_id) == ("from sub",)
    assert OSVI_CLIENT not in sub


async def test_a_missing_cleanup_context_raises_one_line_error(
    osvi_emulator: OsviEmulator,
) -> None:
    """No osvi_client_context: get_osvi_client raises CleanupContextNotInstalledError naming
    it, on one line (not a bare KeyError); nothing is sent."""
    session_id = osvi_emulator.create_session()
    app = web.Application(middlewares=[_show_wiring_errors])
    app.router.add_post("/sessions/{session_id}/notes/{note}", _add_note)
    runner, base_url = await _serve(app)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{base_url}/sessions/{session_id}/notes/lost") as response,
        ):
            assert response.status == 500
            text = await response.text()
    finally:
        await runner.cleanup()
    assert text.startswith("CleanupContextNotInstalledError: no OsviClient in the application")
    assert "osvi_client_context()" in text
    assert "\n" not in text
    assert osvi_emulator.requests("inject_context") == 0


async def test_example_answers_a_malformed_body_400_without_a_traceback(
    osvi_emulator: OsviEmulator,
) -> None:
    """examples/aiohttp_app.py: a body that is not JSON gets 400, JSON that is not an object
    422; nothing is sent and the server prints no traceback."""
    osvi_emulator.create_session(agent_uuid=AGENT, customer_id="cust-000")
    server = await ExampleProcess.start(
        ["examples/aiohttp_app.py"],
        {
            "PORT": "0",
            "OSVI_API_TOKEN": osvi_emulator.api_token,
            "OSVI_BASE_URL": osvi_emulator.base_url,
        },
    )
    try:
        port = await server.port()
        url = f"http://127.0.0.1:{port}/customers/cust-000/notes"
        answers: list[tuple[int, str]] = []
        async with aiohttp.ClientSession() as http:
            for body in (b"notjson", b"\xff\xfe", b"[1, 2]"):
                headers = {"content-type": "application/json"}
                async with http.post(url, data=body, headers=headers) as response:
                    answers.append((response.status, await response.text()))
        server.terminate()
        status = await server.wait()
    finally:
        await server.kill()
    assert answers == [(400, "expected a JSON object")] * 2 + [(422, "expected a JSON object")]
    assert status == 0, server.output
    assert_clean_shutdown(server, untracked_port=port)
    assert osvi_emulator.requests("inject_context") == 0


async def test_invalid_client_options_stop_the_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """No token anywhere: the runner's setup raises ClientValidationError, stores nothing."""
    monkeypatch.delenv("OSVI_API_TOKEN", raising=False)
    app = web.Application()
    app.cleanup_ctx.append(osvi_client_context())
    runner = web.AppRunner(app)
    with pytest.raises(ClientValidationError):
        await runner.setup()
    await runner.cleanup()
    assert OSVI_CLIENT not in app


async def test_example_under_run_app_keeps_every_accepted_note_through_sigterm(
    osvi_emulator: OsviEmulator,
) -> None:
    """200 clients, SIGTERM mid-load: every 201 landed once, nothing else did, exit 0."""
    arguments = ["examples/aiohttp_app.py"]
    load, server, status, port = await run_web_example(osvi_emulator, arguments, {"PORT": "0"})
    assert status == 0, server.output
    # Allowed: warnings about connections aiohttp accepted as it stopped and never closed
    # (see untracked_connections); the notes sent on them are checked like every other.
    untracked = assert_clean_shutdown(server, untracked_port=port)
    print(
        f"aiohttp: sent {load.sent}, accepted {len(load.accepted)} "
        f"({load.accepted_after_signal} after SIGTERM), failed {len(load.failed)}, "
        f"exit {status}, untracked server connections' warnings {untracked}"
    )
    # Mid-load: requests were in flight when the signal came, and each client's last one was
    # refused by the stopped server (before the signal, none failed).
    assert load.accepted_after_signal > 0
    assert load.failed_before_signal == 0
    assert len(load.failed) == CLIENTS
