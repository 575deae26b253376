"""The serve command line's capacity options: parsed into a model, or one line and exit 2."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import aiohttp
import pytest

from osvi_async.testing import main
from tests.testing.helpers import Api

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--capacity", "0"], "argument --capacity: must be >= 1, got 0"),
        (["--capacity", "x"], "argument --capacity: not an integer: 'x'"),
        (["--service-time", "0.1"], "--service-time needs --capacity"),
        (["--capacity-schedule", "1:2"], "--capacity-schedule needs --capacity"),
        (["--capacity", "2", "--service-time", "0"], "--service-time must be a finite number"),
        (["--capacity", "2", "--service-time", "nan"], "must be a finite number, got nan"),
        (["--capacity", "2", "--jitter", "1"], "--jitter must be within [0, 1)"),
        (["--capacity", "2", "--queue-limit", "-1"], "argument --queue-limit: must be >= 0"),
        (["--capacity", "2", "--refusal-status", "500"], "invalid choice: 500"),
        (["--capacity", "2", "--capacity-schedule", "5"], "expected T:N pairs"),
        (["--capacity", "2", "--capacity-schedule", "2:1,1:3"], "in ascending order"),
        (["--capacity", "2", "--capacity-schedule", "1:0"], "must be >= 1, got 0"),
    ],
)
def test_bad_capacity_options_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each bad capacity option is one line on stderr naming the problem, and exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1
    assert message in err


async def test_serves_with_the_capacity_it_was_given() -> None:
    """--capacity 1 --queue-limit 0 --refusal-status 503: of two at once, one is refused."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["--port", "0", "--capacity", "1", "--service-time", "0.3", "--refusal-status", "503"]
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-W", "error", "-m", "osvi_async.testing", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            lines = [(await process.stdout.readline()).decode() for _ in range(3)]
        url = re.search(r"http://127\.0\.0\.1:\d+", lines[0])
        assert url is not None, lines
        token = lines[1].split()[2]
        assert lines[2] == "Capacity: 1 at once, 300 ms each (+/-0%), queue 0, then 503\n"
        async with aiohttp.ClientSession(base_url=url[0]) as http:
            api = Api(http, token)
            created = await api.create({"agent_uuid": "agent_A", "customer_id": "cust"})
            session_id = created.json["data"]["id"]
            replies = await asyncio.gather(
                *(api.inject(session_id, {"context": str(n)}) for n in range(2))
            )
        assert sorted(reply.status for reply in replies) == [200, 503]
        process.terminate()
        async with asyncio.timeout(10):
            await process.communicate()
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
