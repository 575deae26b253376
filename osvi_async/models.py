"""The values the API answers with, as frozen attrs classes.

They are built in one place, `osvi_async._decode`, from the JSON the API sends; sequences are
tuples so that a result can be shared, hashed and kept without defensive copies.
"""

from __future__ import annotations

import attrs

__all__ = ["InjectContextResult"]


@attrs.frozen(slots=True)
class InjectContextResult:
    """What `OsviClient.inject_context` returns once the API has accepted the entry.

    Attributes:
        session_id: The chat session the entry was appended to.
        context: The session's context bucket after the append, oldest first. The API keeps
            only the 5 most recent entries, so an older entry may have dropped out of it.
        attempts: How many HTTP attempts the call took (1 when the first one succeeded).
    """

    session_id: str
    context: tuple[str, ...]
    attempts: int = 1
