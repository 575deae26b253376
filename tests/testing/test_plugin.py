"""The opt-in pytest plugin works as docs/testing.md tells users to enable it."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from osvi_async.testing import OsviEmulator

REPO = Path(__file__).resolve().parents[2]

CONFTEST = 'pytest_plugins = ["osvi_async.testing.pytest_plugin"]\n'

# A user's test in pytest-asyncio's default strict mode, with warnings as errors.
USER_TEST = """
import aiohttp
import pytest

from osvi_async import OsviClient
from osvi_async.testing import FaultPlan, OsviEmulator


@pytest.mark.asyncio
async def test_uses_the_fixtures(osvi_emulator: OsviEmulator, osvi_session_id: str) -> None:
    osvi_emulator.fault_plan = FaultPlan(engine_error=1.0)
    headers = {"API-Token": osvi_emulator.api_token}
    path = f"/v1/chat/session/{osvi_session_id}/inject_context"
    async with aiohttp.ClientSession(base_url=osvi_emulator.base_url, headers=headers) as http:
        async with http.post(path, json={"context": "x"}) as response:
            assert response.status == 502
    assert osvi_emulator.requests_for(osvi_session_id) == 1
    assert osvi_emulator.applied(osvi_session_id) == ()


@pytest.mark.asyncio
async def test_client_fixture_is_bound_to_the_emulator(
    osvi_client: OsviClient, osvi_emulator: OsviEmulator, osvi_session_id: str
) -> None:
    osvi_emulator.fault_plan.script(osvi_session_id, ["engine_error"])
    result = await osvi_client.inject_context(osvi_session_id, "summary")
    assert result.attempts == 2
    assert osvi_emulator.applied(osvi_session_id) == ("summary",)


@pytest.mark.asyncio
async def test_gets_a_fresh_emulator(osvi_emulator: OsviEmulator) -> None:
    assert osvi_emulator.stats.requests_total == 0
    assert osvi_emulator.fault_plan.engine_error == 0.0
"""


async def test_pytest_plugins_line_enables_the_fixtures(tmp_path: Path) -> None:
    """A project listing the plugin in pytest_plugins gets working, isolated fixtures."""
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_user.py").write_text(USER_TEST)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-W",
        "error",
        "-o",
        "asyncio_mode=strict",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
        str(tmp_path),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    assert b"3 passed" in output


async def test_fixtures_give_a_running_emulator_and_an_active_session(
    osvi_emulator: OsviEmulator, osvi_session_id: str
) -> None:
    """osvi_emulator is listening and osvi_session_id names an active, empty session on it."""
    assert osvi_emulator.port > 0
    assert osvi_emulator.bucket(osvi_session_id) == ()
