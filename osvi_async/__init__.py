"""osvi-async: the asyncio SDK for the OSVI AI chat platform.

Everything public is importable from here; modules with a leading underscore are private.
"""

from osvi_async._client import OsviClient
from osvi_async._config import RetryEvent, RetryPolicy
from osvi_async.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ClientValidationError,
    EngineError,
    EngineRejectedError,
    NotFoundError,
    OsviError,
    RateLimitError,
    ResponseDecodeError,
    ServerError,
)
from osvi_async.models import InjectContextResult

__version__ = "0.1.0.dev0"

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ClientValidationError",
    "EngineError",
    "EngineRejectedError",
    "InjectContextResult",
    "NotFoundError",
    "OsviClient",
    "OsviError",
    "RateLimitError",
    "ResponseDecodeError",
    "RetryEvent",
    "RetryPolicy",
    "ServerError",
    "__version__",
]
