"""osvi_async.integrations.fastapi: the lifespan, the dependency, and examples/fastapi_app.py
under a real uvicorn, loaded and stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

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
    assert text.startswith("LifespanNotInstalledError: no OsviClient in request.state or app")
    assert "lifespan=osvi_lifespan()" in text
    assert "\n" not in text
    assert osvi_emulator.requests("inject_context") == 0
    with pytest.raises(LifespanNotInstalledError):
        get_osvi_client(Request({"type": "http", "app": Starlette()}))


def _show_wiring_errors(app: FastAPI) -> None:
    """Answer LifespanNotInstalledError as a 500 whose body is its type and message."""

    @app.exception_handler(LifespanNotInstalledError)
    async def show(request: Request, error: Exception) -> PlainTextResponse:
        return PlainTextResponse(f"{type(error).__name__}: {error}", status_code=500)


async def test_mounted_applications_get_the_outer_lifespans_client(
    osvi_emulator: OsviEmulator,
) -> None:
    """A FastAPI app mounted with app.mount and a Starlette Mount both get the client that the
    outer app's osvi_lifespan opened (through the lifespan state), and their notes land."""
    session_id = osvi_emulator.create_session()
    fastapi_sub = _note_app(FastAPI())

    async def add_note(request: Request) -> JSONResponse:
        client = get_osvi_client(request)
        await client.inject_context(request.path_params["session_id"], "from starlette mount")
        return JSONResponse({"client": id(client)})

    starlette_sub = Starlette(routes=[Route("/{session_id}", add_note, methods=["POST"])])
    lifespan = osvi_lifespan(osvi_emulator.api_token, base_url=osvi_emulator.base_url)
    app = FastAPI(lifespan=lifespan, routes=[Mount("/starlette", starlette_sub)])
    app.mount("/fastapi", fastapi_sub)
    async with serve_in_process(app) as base_url:
        answers = await _post_all(
            base_url,
            [
                f"/fastapi/sessions/{session_id}/notes/from fastapi mount",
                f"/starlette/{session_id}",
            ],
        )
    assert [answer["client"] for answer in answers] == [id(app.state.osvi_client)] * 2
    assert sorted(osvi_emulator.applied(session_id)) == [
        "from fastapi mount",
        "from starlette mount",
    ]
    assert app.state.osvi_client.closed


async def test_a_composed_lifespans_merged_state_reaches_mounted_applications(
    osvi_emulator: OsviEmulator,
) -> None:
    """The app's own lifespan yields {**osvi_state, ...}: a mounted app's route sees the client
    and the app's own state key."""
    session_id = osvi_emulator.create_session()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        osvi = osvi_lifespan(osvi_emulator.api_token, base_url=osvi_emulator.base_url)
        async with osvi(app) as state:
            yield {**state, "greeting": "merged"}

    sub = FastAPI()

    @sub.post("/sessions/{session_id}")
    async def add_note(session_id: str, request: Request, client: OsviClientDep) -> dict[str, int]:
        await client.inject_context(session_id, request.state.greeting)
        return {"client": id(client)}

    app = FastAPI(lifespan=lifespan)
    app.mount("/sub", sub)
    async with serve_in_process(app) as base_url:
        answers = await _post_all(base_url, [f"/sub/sessions/{session_id}"])
    assert answers == [{"client": id(app.state.osvi_client)}]
    assert osvi_emulator.applied(session_id) == ("merged",)


async def test_a_closed_client_left_by_an_ended_lifespan_raises_the_one_line_error(
    osvi_emulator: OsviEmulator,
) -> None:
    """Served again without its lifespan after one ran (TestClient outside 'with' after
    another test): LifespanNotInstalledError saying the lifespan ended, nothing sent."""
    session_id = osvi_emulator.create_session()
    lifespan = osvi_lifespan(osvi_emulator.api_token, base_url=osvi_emulator.base_url)
    app = _note_app(FastAPI(lifespan=lifespan))
    _show_wiring_errors(app)
    async with serve_in_process(app):
        pass
    assert app.state.osvi_client.closed
    async with (
        serve_in_process(app, lifespan="off") as base_url,
        aiohttp.ClientSession() as http,
        http.post(f"{base_url}/sessions/{session_id}/notes/late") as response,
    ):
        assert response.status == 500
        text = await response.text()
    assert text.startswith("LifespanNotInstalledError: lifespan not running: ")
    assert "is closed" in text
    assert "\n" not in text
    assert osvi_emulator.requests("inject_context") == 0


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
