"""Unit-test fixtures: aioresponses, made to work with the aiohttp release we run on."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses


class _SentRequestWriter:
    """Stands for the writer of a request that is already sent: it only reports its size."""

    output_size = 0


class _CompatResponse(aiohttp.ClientResponse):
    """aiohttp 3.14 made `stream_writer` a required argument that aioresponses 0.7.9 does not
    pass (pnuckowski/aioresponses#289). The mock response has no request body in flight, so a
    writer that only reports a size of 0 is all aiohttp reads from it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _SentRequestWriter())
        super().__init__(*args, **kwargs)


_NEEDS_WRITER = "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters


class _Mock(aioresponses):  # type: ignore[misc]
    def add(self, *args: Any, **kwargs: Any) -> None:
        if _NEEDS_WRITER:
            kwargs.setdefault("response_class", _CompatResponse)
        super().add(*args, **kwargs)


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    """Intercepts every aiohttp request; an unmatched one fails instead of leaving the machine."""
    with _Mock() as mock:
        yield mock
