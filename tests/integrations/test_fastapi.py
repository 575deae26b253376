"""osvi_async.integrations.fastapi: the lifespan, the dependency, and examples/fastapi_app.py
under a real uvicorn, loaded and stopped with SIGTERM."""

from __future__ import annotations

import signal

from osvi_async.testing import OsviEmulator
from tests.integrations._harness import CLIENTS, assert_clean_shutdown, run_web_example


async def test_example_under_uvicorn_keeps_every_accepted_note_through_sigterm(
    osvi_emulator: OsviEmulator,
) -> None:
    """200 clients, SIGTERM mid-load: every 201 landed once, nothing else did, exit clean."""
    arguments = ["-m", "uvicorn", "--app-dir", "examples", "fastapi_app:app"]
    arguments += ["--host", "127.0.0.1", "--port", "0", "--no-access-log"]
    load, server, status = await run_web_example(osvi_emulator, arguments, {})
    print(
        f"fastapi: sent {load.sent}, accepted {len(load.accepted)} "
        f"({load.accepted_after_signal} after SIGTERM), failed {len(load.failed)}, "
        f"exit {status}"
    )
    # uvicorn (0.29+) re-raises the signal it handled once its graceful shutdown is done, so
    # a supervisor sees the process ended by SIGTERM (143 in a shell), as it asked.
    assert status == -signal.SIGTERM, server.output
    assert_clean_shutdown(server)
    assert "Application shutdown complete." in "\n".join(server.stderr)
    # Mid-load: requests were in flight when the signal came, and each client's last one was
    # refused by the stopped server (before the signal, none failed).
    assert load.accepted_after_signal > 0
    assert load.failed_before_signal == 0
    assert len(load.failed) == CLIENTS
