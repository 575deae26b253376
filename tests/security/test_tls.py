"""TLS: verification is on for https, and a certificate we do not trust is refused."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest
import trustme
from aiohttp import web

from osvi_async import APIConnectionError, OsviClient, RetryPolicy

SESSION = "4718a326-417b-4dda-90d0-21fd65a11cb8"
BODY = {"success": True, "data": {"session_id": SESSION, "context": ["x"]}}


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    """A throwaway certificate authority for 127.0.0.1."""
    return trustme.CA()


@pytest.fixture
async def https_url(authority: trustme.CA) -> AsyncIterator[str]:
    """An https server on 127.0.0.1 whose certificate only `authority` vouches for."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)

    async def handler(_request: web.Request) -> web.Response:
        return web.json_response(BODY)

    app = web.Application()
    app.router.add_post("/v1/chat/session/{id}/inject_context", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    yield f"https://127.0.0.1:{site.port}"
    await runner.cleanup()


async def test_untrusted_certificate_is_refused(https_url: str) -> None:
    """The default client verifies certificates: an unknown CA fails before sending."""
    async with OsviClient(
        "0123456789abcdef", base_url=https_url, retry=RetryPolicy.none()
    ) as client:
        with pytest.raises(APIConnectionError) as caught:
            await client.inject_context(SESSION, "x")
    assert caught.value.request_sent is False
    assert "certificate" in str(caught.value.__cause__).lower()


async def test_trusted_certificate_works_through_a_borrowed_session(
    https_url: str, authority: trustme.CA
) -> None:
    """Trusting a private CA is done explicitly, with the caller's own aiohttp session."""
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    connector = aiohttp.TCPConnector(ssl=client_context)
    async with aiohttp.ClientSession(connector=connector) as own:
        client = OsviClient("0123456789abcdef", base_url=https_url, session=own)
        result = await client.inject_context(SESSION, "x")
    assert result.context == ("x",)


def test_no_option_turns_verification_off() -> None:
    """OsviClient takes no ssl/verify switch, so verification cannot be disabled by accident."""
    import inspect

    parameters = set(inspect.signature(OsviClient).parameters)
    assert parameters == {
        "api_token",
        "base_url",
        "timeout",
        "retry",
        "max_connections",
        "max_context_bytes",
        "session",
    }
