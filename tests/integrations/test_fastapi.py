"""osvi_async.integrations.fastapi: the lifespan, the dependency, and examples/fastapi_app.py
under a real uvicorn, loaded and stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from osvi_async import ClientValidationError, OsviClient
from osvi_async.integrations.fastapi import (
    LifespanNotInstalledError,
    OsviClientDep,
    get_osvi_client,
    osvi_lifespan,
)
from osvi_async.testing import OsviEmulator
from tests.integrations._harness import (
    CLIENTS,
    assert_clean_shutdown,
    run_web_example,
    serve_in_process,
)


def _note_app(app: FastAPI) -> FastAPI:
    """Add a route that injects its note into `emulator` and answers with its client's id."""

    @app.post("/sessions/{session_id}/notes/{note}")
    async def add_note(session_id: str, note: str, client: OsviClientDep) -> dict[str, int]:
        await client.inject_context(session_id, note)
        return {"client": id(client)}

    return app


async def _post_all(base_url: str, paths: list[str]) -> list[dict[str, int]]:
    async with aiohttp.ClientSession() as http:

        async def post(path: str) -> dict[str, int]:
            async with http.post(base_url + path) as response:
                assert response.status == 200, await response.text()
                answer: dict[str, int] = await response.json()
                return answer

        return await asyncio.gather(*(post(path) for path in paths))


async def test_routes_share_the_lifespans_one_client_which_shutdown_closes(
    osvi_emulator: OsviEmulator,
) -> None:
    """20 concurrent requests get the same client; all land; shutdown closes it."""
    session_id = osvi_emulator.create_session()
    lifespan = osvi_lifespan(osvi_emulator.api_token, base_url=osvi_emulator.base_url)
    app = _note_app(FastAPI(lifespan=lifespan))
    notes = [f"note {n}" for n in range(20)]
    async with serve_in_process(app) as base_url:
        answers = await _post_all(base_url, [f"/sessions/{session_id}/notes/{n}" for n in notes])
        client = app.state.osvi_client
        assert not client.closed
    assert {answer["client"] for answer in answers} == {id(client)}
    assert sorted(osvi_emulator.applied(session_id)) == sorted(notes)
    assert client.closed


async def test_lifespan_composes_with_the_applications_own(osvi_emulator: OsviEmulator) -> None:
    """Entered inside the app's lifespan: the client opens first and closes last."""
    session_id = osvi_emulator.create_session()
    seen: list[tuple[str, bool]] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        osvi = osvi_lifespan(osvi_emulator.api_token, base_url=osvi_emulator.base_url)
        async with osvi(app):
            client: OsviClient = app.state.osvi_client
            seen.append(("startup", client.closed))
            yield
            seen.append(("shutdown", client.closed))

    app = _note_app(FastAPI(lifespan=lifespan))
    async with serve_in_process(app) as base_url:
        await _post_all(base_url, [f"/sessions/{session_id}/notes/composed"])
    assert seen == [("startup", False), ("shutdown", False)]
    assert app.state.osvi_client.closed
    assert osvi_emulator.applied(session_id) == ("composed",)


async def test_dependency_without_the_lifespan_raises_one_line_error(
    osvi_emulator: OsviEmulator,
) -> None:
    """A route whose app has no osvi_lifespan gets LifespanNotInstalledError; nothing is sent."""
    app = _note_app(FastAPI())

    @app.exception_handler(LifespanNotInstalledError)
    async def show(request: Request, error: Exception) -> PlainTextResponse:
        return PlainTextResponse(f"{type(error).__name__}: {error}", status_code=500)

    async with serve_in_process(app) as base_url, aiohttp.ClientSession() as http:
        session_id = osvi_emulator.create_session()
        async with http.post(f"{base_url}/sessions/{session_id}/notes/lost") as response:
            assert response.status == 500
            text = await response.text()
    assert text.startswith("LifespanNotInstalledError: no OsviClient on app.state")
    assert "lifespan=osvi_lifespan()" in text
    assert "\n" not in text
    assert osvi_emulator.requests("inject_context") == 0
    with pytest.raises(LifespanNotInstalledError):
        get_osvi_client(Request({"type": "http", "app": Starlette()}))


async def test_invalid_client_options_stop_the_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """No token anywhere: entering the lifespan raises ClientValidationError, stores nothing."""
    monkeypatch.delenv("OSVI_API_TOKEN", raising=False)
    app = FastAPI()
    with pytest.raises(ClientValidationError):
        async with osvi_lifespan()(app):
            pass
    assert not hasattr(app.state, "osvi_client")


async def test_a_starlette_application_uses_it_without_fastapis_routing(
    osvi_emulator: OsviEmulator,
) -> None:
    """Starlette(lifespan=osvi_lifespan(...)) and get_osvi_client(request) in a plain route."""
    session_id = osvi_emulator.create_session()

    async def add_note(request: Request) -> JSONResponse:
        client = get_osvi_client(request)
        result = await client.inject_context(session_id, "from starlette")
        return JSONResponse({"session_id": result.session_id})

    app = Starlette(
        routes=[Route("/note", add_note, methods=["POST"])],
        lifespan=osvi_lifespan(osvi_emulator.api_token, base_url=osvi_emulator.base_url),
    )
    async with (
        serve_in_process(app) as base_url,
        aiohttp.ClientSession() as http,
        http.post(f"{base_url}/note") as response,
    ):
        assert await response.json() == {"session_id": session_id}
    assert osvi_emulator.applied(session_id) == ("from starlette",)
    assert app.state.osvi_client.closed


async def test_example_under_uvicorn_keeps_every_accepted_note_through_sigterm(
    osvi_emulator: OsviEmulator,
) -> None:
    """200 clients, SIGTERM mid-load: every 201 landed once, nothing else did, exit clean."""
    arguments = ["-m", "uvicorn", "--app-dir", "examples", "fastapi_app:app"]
    arguments += ["--host", "127.0.0.1", "--port", "0", "--no-access-log"]
    load, server, status, _ = await run_web_example(osvi_emulator, arguments, {})
    print(
        f"fastapi: sent {load.sent}, accepted {len(load.accepted)} "
        f"({load.accepted_after_signal} after SIGTERM), failed {len(load.failed)}, "
        f"exit {status}"
    )
    # uvicorn (0.29+) re-raises the signal it handled once its graceful shutdown is done, so
    # a supervisor sees the process ended by SIGTERM (143 in a shell), as it asked.
    assert status == -signal.SIGTERM, server.output
    assert_clean_shutdown(server)
    assert "Application shutdown complete." in "\n".join(server.stderr)
    # Mid-load: requests were in flight when the signal came, and each client's last one was
    # refused by the stopped server (before the signal, none failed).
    assert load.accepted_after_signal > 0
    assert load.failed_before_signal == 0
    assert len(load.failed) == CLIENTS
