"""What makes a 200 from Prism mean something: it checks the token header and request bodies.

Without these two facts the SDK tests on Prism would pass against a mock that accepts anything;
with them, each success there also shows the SDK sent the header and a body the spec allows.
"""

from __future__ import annotations

import aiohttp

from tests.support import SESSION_ID, TOKEN


async def test_prism_refuses_a_request_without_the_token_header(prism_url: str) -> None:
    """A create without API-Token gets 401 from Prism, so the SDK's 200s prove it sent one."""
    body = {"agent_uuid": "agent_x", "customer_id": "c1"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{prism_url}/v1/chat/session", json=body) as answer,
    ):
        assert answer.status == 401
        assert "Invalid security scheme" in answer.headers["sl-violations"]


async def test_prism_refuses_a_body_that_breaks_the_spec(prism_url: str) -> None:
    """A tell without its message gets 422 from Prism, so the SDK's 200s prove spec bodies."""
    async with (
        aiohttp.ClientSession(headers={"API-Token": TOKEN}) as http,
        http.post(
            f"{prism_url}/v1/chat/session/{SESSION_ID}/support", json={"command": "tell"}
        ) as answer,
    ):
        assert answer.status == 422
        assert "must have required property 'message'" in answer.headers["sl-violations"]
