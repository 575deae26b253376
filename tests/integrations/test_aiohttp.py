"""osvi_async.integrations.aiohttp: the cleanup context, the app key, and
examples/aiohttp_app.py under aiohttp's own runner (`web.run_app`), loaded and stopped with
SIGTERM."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from osvi_async import ClientValidationError
from osvi_async.integrations.aiohttp import OSVI_CLIENT, osvi_client_context
from osvi_async.testing import OsviEmulator
from tests.integrations._harness import CLIENTS, assert_clean_shutdown, run_web_example


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
