"""The README's quickstart, run as written against the emulator."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from osvi_async.testing import OsviEmulator

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE_SESSION_ID = "4718a326-417b-4dda-90d0-21fd65a11cb8"


def quickstart_code() -> str:
    """The first Python block under the README's Quickstart heading."""
    section = README.read_text(encoding="utf-8").split("## Quickstart", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "README has no Python quickstart block"
    return match.group(1)


async def test_readme_quickstart_runs_against_emulator(osvi_emulator: OsviEmulator) -> None:
    """The quickstart, with only the session id swapped, injects one entry and prints the bucket."""
    session_id = osvi_emulator.create_session(context=["Initial context for this chat"])
    code = quickstart_code()
    assert EXAMPLE_SESSION_ID in code
    env = {
        **os.environ,
        "OSVI_API_TOKEN": osvi_emulator.api_token,
        "OSVI_BASE_URL": osvi_emulator.base_url,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code.replace(EXAMPLE_SESSION_ID, session_id),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    entry = "Voice call ended: the customer wants a refund and prefers WhatsApp follow-up."
    assert osvi_emulator.applied(session_id) == (entry,)
    assert stdout.decode().strip() == repr(("Initial context for this chat", entry))
