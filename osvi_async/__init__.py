"""osvi-async: the asyncio SDK for the OSVI AI chat platform.

Everything public is importable from here; modules with a leading underscore are private.

The error tree is imported at once (it depends on nothing); the client, the models and the
bulk runner load on first use, because they pull in aiohttp and attrs: `import osvi_async`
stays cheap, which lets the command line install its signal handlers within milliseconds.
"""

import importlib
from typing import TYPE_CHECKING, Any

from osvi_async.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    ClientClosedError,
    ClientValidationError,
    EngineError,
    EngineRejectedError,
    ItemHeldError,
    NotFoundError,
    OsviError,
    RateLimitError,
    RequestTooLargeError,
    ResponseDecodeError,
    RunStoppedError,
    ServerError,
    TLSHandshakeError,
)

if TYPE_CHECKING:
    from osvi_async._bulk import BulkRun, refused_for_good
    from osvi_async._client import OsviClient
    from osvi_async._config import CircuitBreaker, RetryBudget, RetryEvent, RetryPolicy
    from osvi_async.models import (
        BulkSummary,
        ChatSession,
        CustomerInjectRequest,
        InjectContextResult,
        InjectOutcome,
        InjectRequest,
        MessageReply,
        SessionMetadata,
        SupportCommand,
        SupportResult,
    )

_LAZY: dict[str, str] = {
    "BulkRun": "osvi_async._bulk",
    "refused_for_good": "osvi_async._bulk",
    "OsviClient": "osvi_async._client",
    "CircuitBreaker": "osvi_async._config",
    "RetryBudget": "osvi_async._config",
    "RetryEvent": "osvi_async._config",
    "RetryPolicy": "osvi_async._config",
    "BulkSummary": "osvi_async.models",
    "ChatSession": "osvi_async.models",
    "CustomerInjectRequest": "osvi_async.models",
    "MessageReply": "osvi_async.models",
    "SessionMetadata": "osvi_async.models",
    "SupportCommand": "osvi_async.models",
    "SupportResult": "osvi_async.models",
    "InjectContextResult": "osvi_async.models",
    "InjectOutcome": "osvi_async.models",
    "InjectRequest": "osvi_async.models",
}


def __getattr__(name: str) -> Any:
    """Load a lazily exported name on first use, then keep it as a plain attribute."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'osvi_async' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__version__ = "0.1.0.dev0"

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BulkRun",
    "BulkSummary",
    "ChatSession",
    "CircuitBreaker",
    "CircuitOpenError",
    "ClientClosedError",
    "ClientValidationError",
    "CustomerInjectRequest",
    "EngineError",
    "EngineRejectedError",
    "InjectContextResult",
    "InjectOutcome",
    "InjectRequest",
    "ItemHeldError",
    "MessageReply",
    "NotFoundError",
    "OsviClient",
    "OsviError",
    "RateLimitError",
    "RequestTooLargeError",
    "ResponseDecodeError",
    "RetryBudget",
    "RetryEvent",
    "RetryPolicy",
    "RunStoppedError",
    "ServerError",
    "SessionMetadata",
    "SupportCommand",
    "SupportResult",
    "TLSHandshakeError",
    "__version__",
    "refused_for_good",
]
