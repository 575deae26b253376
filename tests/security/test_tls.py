"""TLS: verification is on for https, and a certificate we do not trust is refused."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from osvi_async import OsviClient, RetryPolicy, TLSHandshakeError
from osvi_async._transport import HttpBackend
from tests.chaos._servers import RawServer
from tests.support import FakeSleep

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


async def test_untrusted_certificate_is_refused(https_url: str, http_backend: HttpBackend) -> None:
    """The default client verifies certificates: an unknown CA fails before sending, for good."""
    sleep = FakeSleep()
    async with OsviClient(
        "0123456789abcdef",
        base_url=https_url,
        retry=RetryPolicy(sleep=sleep),
        http_backend=http_backend,
    ) as client:
        with pytest.raises(TLSHandshakeError) as caught:
            await client.inject_context(SESSION, "x")
    error = caught.value
    assert (error.request_sent, error.may_have_been_applied, error.attempts) == (False, False, 1)
    assert sleep.delays == []
    assert "certificate" in str(error.__cause__).lower()
    assert f"TLS handshake with 127.0.0.1:{https_url.rsplit(':', 1)[1]} failed" in str(error)


async def answer_like_plain_http(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer
) -> None:
    """What a plain-HTTP server does with a TLS ClientHello: a 400, then hang up."""
    await reader.read(1024)
    await server.write(writer, b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")


# What each TLS stack says about a plain-HTTP answer to its ClientHello.
NOT_TLS = {"aiohttp": "WRONG_VERSION_NUMBER", "reqwest": "InvalidContentType"}


async def test_https_to_a_plain_http_port_is_tried_once(http_backend: HttpBackend) -> None:
    """https:// on a plain-HTTP port cannot ever succeed: one connection, TLSHandshakeError."""
    sleep = FakeSleep()
    async with RawServer(answer_like_plain_http) as server:
        url = server.base_url.replace("http://", "https://")
        async with OsviClient(
            "0123456789abcdef",
            base_url=url,
            retry=RetryPolicy(sleep=sleep),
            http_backend=http_backend,
        ) as client:
            with pytest.raises(TLSHandshakeError, match=NOT_TLS[http_backend]) as caught:
                await client.inject_context(SESSION, "x")
        assert server.connections_opened == 1
    assert (caught.value.request_sent, caught.value.may_have_been_applied) == (False, False)
    assert sleep.delays == []


@pytest.mark.aiohttp_only  # borrows an aiohttp session
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


async def test_trusted_certificate_works_through_ssl_cert_file_on_reqwest(
    https_url: str, authority: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reqwest trusts what SSL_CERT_FILE names (as OpenSSL does), with verification still on."""
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    async with OsviClient("0123456789abcdef", base_url=https_url, http_backend="reqwest") as client:
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
        "session_cache_ttl",
        "session_cache_size",
        "http_backend",
        "tracer_provider",
        "meter_provider",
    }
