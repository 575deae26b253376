"""Plain-aiohttp helpers for the emulator's own tests; the osvi client is tested elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final

import aiohttp
import attrs
from multidict import CIMultiDictProxy

from osvi_async.testing import OsviEmulator

DEFAULT: Final = object()
"""Stands for "the emulator's own token" where a test may pass None (no header) or another one."""

NO_BODY: Final = object()

AGENT: Final = "agent_IsZ3Q6Sf_60Eh26XQMGbz-R_og"
"""The agent UUID the docs use in their examples."""


@attrs.frozen
class Reply:
    """One HTTP answer, read completely so no connection is left half-used."""

    status: int
    headers: CIMultiDictProxy[str]
    text: str
    content_type: str

    @property
    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.text)


class Api:
    """Sends requests to one emulator with the header and paths of the OSVI Chat v1 API."""

    def __init__(self, http: aiohttp.ClientSession, token: str) -> None:
        self.http = http
        self.token = token

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: object = NO_BODY,
        raw: bytes | None = None,
        token: object = DEFAULT,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        """Send one request and read the whole answer."""
        headers: dict[str, str] = {}
        if token is DEFAULT:
            headers["API-Token"] = self.token
        elif isinstance(token, str):
            headers["API-Token"] = token
        kwargs: dict[str, Any] = {"headers": headers, "params": params}
        if body is not NO_BODY:
            kwargs["json"] = body
        elif raw is not None:
            kwargs["data"] = raw
            headers["Content-Type"] = "application/json"
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        async with self.http.request(method, path, **kwargs) as response:
            text = await response.text()
            return Reply(response.status, response.headers, text, response.content_type)

    async def inject(self, session_id: str, body: object = NO_BODY, **kwargs: Any) -> Reply:
        """POST /v1/chat/session/{id}/inject_context."""
        path = f"/v1/chat/session/{session_id}/inject_context"
        return await self.request("POST", path, body=body, **kwargs)

    async def create(self, body: object = NO_BODY, **kwargs: Any) -> Reply:
        """POST /v1/chat/session."""
        return await self.request("POST", "/v1/chat/session", body=body, **kwargs)

    async def active(self, params: Mapping[str, str], **kwargs: Any) -> Reply:
        """GET /v1/chat/session/active."""
        return await self.request("GET", "/v1/chat/session/active", params=params, **kwargs)

    async def support(self, session_id: str, body: object = NO_BODY, **kwargs: Any) -> Reply:
        """POST /v1/chat/session/{id}/support."""
        path = f"/v1/chat/session/{session_id}/support"
        return await self.request("POST", path, body=body, **kwargs)

    async def inbound(self, body: object = NO_BODY, **kwargs: Any) -> Reply:
        """POST /v1/chat/inbound."""
        return await self.request("POST", "/v1/chat/inbound", body=body, **kwargs)

    async def say(self, customer_id: str, content: str, *, agent_uuid: str = AGENT) -> Reply:
        """POST /v1/chat/inbound for one customer message to ``agent_uuid``."""
        body = {"agent_uuid": agent_uuid, "customer_id": customer_id, "content": content}
        return await self.inbound(body)


@contextlib.asynccontextmanager
async def api_for(emulator: OsviEmulator) -> AsyncIterator[Api]:
    """A plain aiohttp caller for a running ``emulator``, sending its token by default."""
    async with aiohttp.ClientSession(base_url=emulator.base_url) as http:
        yield Api(http, emulator.api_token)


async def eventually(condition: Callable[[], bool], *, timeout: float = 2.0) -> None:
    """Wait until ``condition()`` holds; the server sees a socket close after the client does."""
    async with asyncio.timeout(timeout):
        # Polling: the server's counters have no event to wait on.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)
