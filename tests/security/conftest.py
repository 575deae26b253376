"""The security suite runs on both HTTP backends: the guarantees are ours, not aiohttp's."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["aiohttp", "reqwest"])
def http_backend(request: pytest.FixtureRequest) -> str:
    """The HTTP stack the test's clients send through."""
    return str(request.param)
