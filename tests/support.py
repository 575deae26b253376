"""Constants and small fakes shared by the tests."""

from __future__ import annotations

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
