"""The API token never shows: not in logs at DEBUG, reprs, errors or their chains."""

from __future__ import annotations

import logging
import socket
import traceback

import pytest

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
from osvi_async.testing import FaultPlan, OsviEmulator
from tests.support import exception_chain

SECRET = "Sup3rS3cretT0ken"


def assert_secret_absent(error: BaseException) -> None:
    """Neither str, repr, attributes nor the formatted traceback of the chain show it."""
    for link in exception_chain(error):
        assert SECRET not in str(link)
        assert SECRET not in repr(link)
        assert SECRET not in repr(vars(link))
    assert SECRET not in "".join(traceback.format_exception(error))


async def test_debug_logs_of_a_troubled_run_never_show_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every logger at DEBUG through retries, failures and a bulk run: no token."""
    caplog.set_level(logging.DEBUG)
    async with OsviEmulator(api_token=SECRET) as emulator:
        sessions = [emulator.create_session() for _ in range(5)]
        emulator.fault_plan = FaultPlan(seed=1, engine_error=0.3, ambiguous_drop=0.1)
        policy = RetryPolicy(initial_delay=0.001, max_delay=0.002)
        async with OsviClient(SECRET, base_url=emulator.base_url, retry=policy) as client:
            logging.getLogger("osvi_async").debug("client %r", client)
            async with client.inject_many(
                [(s, f"e{i}") for i, s in enumerate(sessions * 8)]
            ) as run:
                async for _ in run:
                    pass
    assert any(record.name == "osvi_async" for record in caplog.records)
    assert SECRET not in caplog.text


async def test_reprs_never_show_the_token() -> None:
    """Client, view, config, transport and emulator reprs leave the token out."""
    client = OsviClient(SECRET, base_url="http://127.0.0.1:9")
    view = client.with_options(timeout=1.0)
    config = ClientConfig.resolve(
        api_token=SECRET, base_url=None, timeout=1, retry=None, max_connections=1
    )
    emulator = OsviEmulator(api_token=SECRET)
    for thing in (client, view, config, client._transport, emulator):
        assert SECRET not in repr(thing)
        assert SECRET not in str(thing)


async def test_errors_from_every_path_never_show_the_token() -> None:
    """401, engine failure, dropped connection, refused connection, bad body: no token."""
    async with OsviEmulator() as emulator:
        session = emulator.create_session()
        errors: list[OsviError] = []
        async with OsviClient(
            SECRET, base_url=emulator.base_url, retry=RetryPolicy.none()
        ) as wrong_token:
            with pytest.raises(AuthenticationError) as denied:
                await wrong_token.inject_context(session, "x")
            errors.append(denied.value)
        async with OsviClient(
            emulator.api_token, base_url=emulator.base_url, retry=RetryPolicy.none()
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
        SECRET, base_url=f"http://127.0.0.1:{port}", retry=RetryPolicy.none()
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
