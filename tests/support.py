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
