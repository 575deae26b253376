"""``python -m osvi_async.testing`` serves the emulator until a signal, then exits 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from osvi_async.testing import FaultPlan, OsviEmulator, main, serve
from tests.testing.helpers import Api

REPO = Path(__file__).resolve().parents[2]
URL_LINE = re.compile(r"listening on (http://127\.0\.0\.1:(\d+))")


@asynccontextmanager
async def _server(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start the command line in a child process; kill it if the test did not stop it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "error",
        "-m",
        "osvi_async.testing",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.communicate()


async def _announcement(process: asyncio.subprocess.Process) -> tuple[str, str]:
    """Read the URL and the token the server prints when it is ready."""
    assert process.stdout is not None
    async with asyncio.timeout(10):
        url_line = (await process.stdout.readline()).decode()
        token_line = (await process.stdout.readline()).decode()
    match = URL_LINE.search(url_line)
    assert match is not None, url_line
    assert int(match[2]) > 0
    return match[1], token_line.split()[2]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_serves_on_a_free_port_and_exits_0_on_signal(stop_signal: signal.Signals) -> None:
    """With --port 0 it prints the real port, answers with the given token, and exits 0."""
    async with _server("--port", "0", "--token", "T" * 16) as process:
        url, token = await _announcement(process)
        assert token == "T" * 16
        async with aiohttp.ClientSession(base_url=url) as http:
            api = Api(http, token)
            created = await api.create({"agent_uuid": "agent_A", "customer_id": "cust"})
            session_id = created.json["data"]["id"]
            reply = await api.inject(session_id, {"context": "hello"})
        assert reply.json["data"]["context"] == ["hello"]
        process.send_signal(stop_signal)
        async with asyncio.timeout(5):
            assert await process.wait() == 0


async def test_generates_and_prints_a_demo_token_and_applies_faults() -> None:
    """Without --token it prints a generated 16-char token; --fail-rate 1 fails every call."""
    async with _server("--port", "0", "--fail-rate", "1", "--fail-kind", "unavailable") as process:
        url, token = await _announcement(process)
        assert re.fullmatch(r"[A-Za-z0-9]{16}", token)
        async with aiohttp.ClientSession(base_url=url) as http:
            api = Api(http, token)
            created = await api.create({"agent_uuid": "agent_A", "customer_id": "cust"})
            failed = await api.inject(created.json["data"]["id"], {"context": "x"})
        assert (created.status, failed.status) == (200, 503)
        process.terminate()
        _, stderr = await process.communicate()
    assert process.returncode == 0
    assert stderr == b""


async def test_fail_endpoint_chooses_the_failing_endpoints() -> None:
    """--fail-endpoint inbound fails messages (and the new endpoint serves) while inject works."""
    argv = ["--port", "0", "--fail-rate", "1", "--fail-endpoint", "inbound"]
    async with _server(*argv) as process:
        url, token = await _announcement(process)
        async with aiohttp.ClientSession(base_url=url) as http:
            api = Api(http, token)
            message = {"agent_uuid": "agent_A", "customer_id": "cust", "content": "Hi"}
            failed = await api.inbound(message)
            created = await api.create({"agent_uuid": "agent_A", "customer_id": "cust"})
            injected = await api.inject(created.json["data"]["id"], {"context": "x"})
        assert (failed.status, created.status, injected.status) == (502, 200, 200)
        process.terminate()
        await process.communicate()
    assert process.returncode == 0


async def test_a_busy_port_exits_1(osvi_emulator: OsviEmulator) -> None:
    """When the port is taken it says so on stderr and exits 1."""
    async with _server("--port", str(osvi_emulator.port)) as process:
        async with asyncio.timeout(10):
            _, stderr = await process.communicate()
    assert process.returncode == 1
    assert b"cannot serve on 127.0.0.1" in stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--fail-rate", "1.5"],
        ["--port", "70000"],
        ["--latency-ms", "-1"],
        ["--fail-kind", "x"],
        ["--fail-endpoint", "inbox"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Out-of-range options are refused by the parser with exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


async def test_serve_runs_until_cancelled_in_process() -> None:
    """serve() reports the running emulator and stops it when its task is cancelled."""
    ready: asyncio.Queue[OsviEmulator] = asyncio.Queue()
    plan = FaultPlan(engine_error=1.0)
    task = asyncio.create_task(serve("127.0.0.1", 0, "T" * 16, plan, on_ready=ready.put_nowait))
    emulator = await asyncio.wait_for(ready.get(), 5)
    assert (emulator.api_token, emulator.fault_plan) == ("T" * 16, plan)
    async with aiohttp.ClientSession(base_url=emulator.base_url) as http:
        reply = await Api(http, "T" * 16).inject(emulator.create_session(), {"context": "x"})
    assert reply.status == 502
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as http:
            await http.get(emulator.base_url)
