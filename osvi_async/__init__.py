"""osvi-async: the asyncio SDK for the OSVI AI chat platform.

Everything public is importable from here; modules with a leading underscore are private.
"""

from osvi_async._bulk import BulkRun, refused_for_good
from osvi_async._client import OsviClient
from osvi_async._config import CircuitBreaker, RetryBudget, RetryEvent, RetryPolicy
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
from osvi_async.models import BulkSummary, InjectContextResult, InjectOutcome, InjectRequest

__version__ = "0.1.0.dev0"

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BulkRun",
    "BulkSummary",
    "CircuitBreaker",
    "CircuitOpenError",
    "ClientClosedError",
    "ClientValidationError",
    "EngineError",
    "EngineRejectedError",
    "InjectContextResult",
    "InjectOutcome",
    "InjectRequest",
    "ItemHeldError",
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
    "TLSHandshakeError",
    "__version__",
    "refused_for_good",
]
