"""Prism (``@stoplight/prism-cli``), a third-party mock of osvi-chat-v1.yaml, for the whole session.

Prism is installed by ``python3 scripts/check.py`` into ``<repo>/.prism`` (pinned there). When it
is missing the tests here fail, never skip: a mock that silently stops running proves nothing.

Prism serves the spec in static mode: every 200 answer is built from the schemas (ids are the
literal ``"string"`` unless the schema has a format or example), it checks each request against
the spec (a body or query that breaks the spec gets 422, or inject's documented 400) and checks
that the ``API-Token`` header is present (401 otherwise; the value is not checked). A request with
``Prefer: code=<status>`` gets that documented answer instead.

The spec is read from ``tests/testing/spec/``, the copy the contract tests vendor and check
against ``../shared/api``, so a clean clone has it and there is one copy to keep in sync.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from osvi_async import OsviClient, RetryPolicy
from tests.support import TOKEN

ROOT = Path(__file__).resolve().parents[2]
PRISM = ROOT / ".prism" / "node_modules" / ".bin" / ("prism.cmd" if os.name == "nt" else "prism")
SPEC = ROOT / "tests" / "testing" / "spec" / "osvi-chat-v1.yaml"
# Start-up takes about a second here; the limit only bounds a Prism that never comes up.
STARTUP_LIMIT = 60.0


def _free_port() -> int:
    """A port nothing listens on right now (Prism needs a number; it cannot report port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def prism_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Run ``prism mock`` on 127.0.0.1 for the test session; yields its base URL."""
    if not PRISM.exists():
        pytest.fail(
            f"Prism is not installed at {PRISM}: run `python3 scripts/check.py`, which installs "
            "@stoplight/prism-cli with npm (needs Node.js 20+)"
        )
    port = _free_port()
    log = tmp_path_factory.mktemp("prism") / "prism.log"
    # The log goes to a file: Prism writes a line per request, and a pipe nobody reads would fill.
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(PRISM), "mock", "-h", "127.0.0.1", "-p", str(port), str(SPEC)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + STARTUP_LIMIT
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Prism did not start listening on {port}:\n{log.read_text()}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def prism(prism_url: str) -> AsyncIterator[OsviClient]:
    """A client for Prism that never retries, so one call is one request."""
    async with OsviClient(TOKEN, base_url=prism_url, retry=RetryPolicy.none()) as client:
        yield client


@contextlib.asynccontextmanager
async def answering(prism_url: str, status: int) -> AsyncIterator[OsviClient]:
    """A client whose every request asks Prism for the documented ``status`` answer.

    The SDK adds no header a caller chooses, but it takes an ``aiohttp.ClientSession`` (the
    public ``session=``), and that session's default headers go out with every request.
    """
    async with (
        aiohttp.ClientSession(headers={"Prefer": f"code={status}"}) as session,
        OsviClient(TOKEN, base_url=prism_url, retry=RetryPolicy.none(), session=session) as client,
    ):
        yield client
