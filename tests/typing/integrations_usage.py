"""The framework integrations as users write them; checked by `mypy --strict`, never run."""

from __future__ import annotations

from typing import assert_type

from aiohttp import web
from fastapi import FastAPI
from starlette.requests import Request

from osvi_async import InjectContextResult, OsviClient
from osvi_async.integrations.aiohttp import OSVI_CLIENT, osvi_client_context
from osvi_async.integrations.aiohttp import get_osvi_client as get_aiohttp_client
from osvi_async.integrations.fastapi import OsviClientDep, get_osvi_client, osvi_lifespan

app = FastAPI(lifespan=osvi_lifespan(timeout=5.0))
misspelt = osvi_lifespan(timout=5.0)  # type: ignore[call-arg]


@app.post("/notes/{customer_id}")
async def add_note(customer_id: str, note: str, client: OsviClientDep) -> str:
    result = await client.inject_context_for_customer(customer_id, "agent_x", note)
    assert_type(result, InjectContextResult)
    return result.session_id


def starlette_route(request: Request) -> OsviClient:
    return get_osvi_client(request)


def aiohttp_handler(request: web.Request) -> OsviClient:
    return request.app[OSVI_CLIENT]


def aiohttp_subapp_handler(request: web.Request) -> OsviClient:
    assert_type(request.config_dict[OSVI_CLIENT], OsviClient)
    return get_aiohttp_client(request)


aiohttp_app = web.Application()
aiohttp_app.cleanup_ctx.append(osvi_client_context(max_connections=50))
assert_type(aiohttp_app[OSVI_CLIENT], OsviClient)
