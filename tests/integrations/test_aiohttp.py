"""osvi_async.integrations.aiohttp: the cleanup context, the app key, and
examples/aiohttp_app.py under aiohttp's own runner (`web.run_app`), loaded and stopped with
SIGTERM."""

from __future__ import annotations

from osvi_async.testing import OsviEmulator
from tests.integrations._harness import CLIENTS, assert_clean_shutdown, run_web_example


async def test_example_under_run_app_keeps_every_accepted_note_through_sigterm(
    osvi_emulator: OsviEmulator,
) -> None:
    """200 clients, SIGTERM mid-load: every 201 landed once, nothing else did, exit 0."""
    arguments = ["examples/aiohttp_app.py"]
    load, server, status = await run_web_example(osvi_emulator, arguments, {"PORT": "0"})
    print(
        f"aiohttp: sent {load.sent}, accepted {len(load.accepted)} "
        f"({load.accepted_after_signal} after SIGTERM), failed {len(load.failed)}, "
        f"exit {status}"
    )
    assert status == 0, server.output
    assert_clean_shutdown(server)
    assert load.accepted_after_signal > 0
    assert load.failed_before_signal == 0
    assert len(load.failed) == CLIENTS
