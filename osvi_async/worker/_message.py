"""The message one injection travels as: JSON, versioned, with its ordering key.

`{"v": 1, "session_id": ..., "context": ...}`, or addressed by customer,
`{"v": 1, "customer_id": ..., "agent_uuid": ..., "context": ...}`. The ordering key (the
session, lower-cased; or the customer and agent) is the routing key, so the consistent-hash
exchange sends one key's messages to one partition, in publish order.
"""

from __future__ import annotations

from typing import Any, Final

from osvi_async import _json
from osvi_async._config import DEFAULT_MAX_CONTEXT_BYTES
from osvi_async._validation import (
    check_context,
    check_identifier,
    check_session_id,
    encode_inject_body,
)
from osvi_async.errors import ClientValidationError
from osvi_async.models import CustomerInjectRequest, InjectRequest

SCHEMA_VERSION: Final = 1
KEY_HEADER: Final = "x-osvi-key"

Request = InjectRequest | CustomerInjectRequest


class PoisonMessageError(ValueError):
    """A message that is not an injection this version understands; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def ordering_key(request: Request) -> str:
    """What keeps messages in order: the session (UUIDs are case-insensitive), or the pair."""
    if isinstance(request, InjectRequest):
        return request.session_id.lower()
    return f"{request.customer_id}\0{request.agent_uuid}"


def encode(
    request: Request, max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES
) -> tuple[bytes, str]:
    """The body and the ordering key of a checked request; ClientValidationError if invalid
    (a context over `max_context_bytes` included: a worker's client would refuse it)."""
    context = check_context(request.context)
    encode_inject_body(context, max_context_bytes)  # the size, and text UTF-8 can carry
    body: dict[str, Any] = {"v": SCHEMA_VERSION}
    if isinstance(request, InjectRequest):
        body["session_id"] = check_session_id(request.session_id)
    else:
        body["customer_id"] = check_identifier("customer_id", request.customer_id)
        body["agent_uuid"] = check_identifier("agent_uuid", request.agent_uuid)
    body["context"] = context
    return _json.dumps(body), ordering_key(request)


def decode(body: bytes, *, redelivered: bool = False) -> Request:
    """The request a message carries; `redelivered` marks it as possibly applied already.

    Raises:
        PoisonMessageError: Not JSON, not an object, an unknown version, or fields that
            are missing or invalid.
    """
    try:
        payload = _json.loads(body)
    except (ValueError, RecursionError):
        raise PoisonMessageError("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise PoisonMessageError("the body is not a JSON object")
    version = payload.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:  # not True, not 1.0
        raise PoisonMessageError(f"unknown message version {version!r}"[:120])
    try:
        if "session_id" in payload:
            return InjectRequest(
                check_session_id(payload["session_id"]),
                check_context(payload.get("context")),
                may_have_been_applied=redelivered,
            )
        return CustomerInjectRequest(
            check_identifier("customer_id", payload.get("customer_id")),
            check_identifier("agent_uuid", payload.get("agent_uuid")),
            check_context(payload.get("context")),
            may_have_been_applied=redelivered,
        )
    except ClientValidationError as error:
        raise PoisonMessageError(str(error)) from None
