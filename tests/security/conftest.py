"""The security suite runs on both HTTP backends: the guarantees are ours, not aiohttp's."""

from __future__ import annotations

from typing import cast

import pytest

from osvi_async._transport import HTTP_BACKENDS, HttpBackend


@pytest.fixture(params=HTTP_BACKENDS)
def http_backend(request: pytest.FixtureRequest) -> HttpBackend:
    """The HTTP stack the test's clients send through."""
    return cast("HttpBackend", request.param)
