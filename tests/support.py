"""Constants, small fakes and a one-route test server shared by the tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TOKEN = "tok_0123456789ab"
SESSION_ID = "4718a326-417b-4dda-90d0-21fd65a11cb8"
BASE_URL = "https://api.osvi.ai"
INJECT_URL = f"{BASE_URL}/v1/chat/session/{SESSION_ID}/inject_context"


class FakeSleep:
    """Records backoff waits instead of sleeping, so retry tests run instantly."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def exception_chain(error: BaseException) -> list[BaseException]:
    """The error and every exception it was raised from or during, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


@contextlib.asynccontextmanager
async def inject_server(handler: Handler) -> AsyncIterator[str]:
    """Serve `handler` for the inject_context route on 127.0.0.1; yields the base URL.

    For servers that misbehave on purpose (echo headers, answer late or for another
    session), where the emulator's faithful behaviour is not what a test needs.
    """
    app = web.Application()
    app.router.add_post("/v1/chat/session/{id}/inject_context", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    try:
        await site.start()
        yield f"http://127.0.0.1:{site.port}"
    finally:
        await runner.cleanup()
