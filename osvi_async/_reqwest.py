"""The optional HTTP transport on Rust's reqwest (pyreqwest): the only module that touches it.

Skeleton: the implementation lands with issue 12's second section.
"""

from __future__ import annotations

import pyreqwest  # noqa: F401 - fails the import when the extra is missing

from osvi_async._decode import Scrubber
from osvi_async._transport import RawResponse


class ReqwestTransport:
    """One reqwest client (its own pool) and the headers every request carries."""

    def __init__(self, *, api_token: str, max_connections: int, max_response_bytes: int) -> None:
        self.scrubber = Scrubber(api_token)
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once `close()` ran."""
        return self._closed

    @property
    def needs_closing(self) -> bool:
        """True while this transport holds a pool it opened and has not closed it."""
        return False

    async def send(
        self, method: str, url: str, body: bytes | None, *, timeout: float
    ) -> RawResponse:
        """Not yet."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close the pool; safe to call more than once."""
        self._closed = True
