"""Every documented answer the emulator gives validates against the project's OpenAPI specs.

The specs are read from copies in ``tests/testing/spec/`` so the tests run from any checkout;
when the shared originals (``<repo>/../shared/api/``) are present, the copies must equal them.

The seed (``inject_context.openapi.yaml``) declares ``openapi: 3.1.0`` but marks
``upstream_body`` with the OpenAPI 3.0 keyword ``nullable: true``, which 3.1 ignores; read
literally it forbids the ``"upstream_body": null`` that the seed's own description (and
``osvi-chat-v1.yaml``: ``type: [object, 'null']``) allows. ``_as_openapi_31`` translates that
keyword to its 3.1 spelling before validating; nothing else is changed.

``osvi-chat-v1.yaml`` types the active lookup's ``data`` as ``oneOf: [ChatSession,
ActiveSessionsByAgent]``, but ChatSession has no required keys and allows unknown ones, so a
map of sessions matches both and ``oneOf`` rejects it. That one answer is checked against
``ActiveSessionsByAgent`` directly.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from osvi_async.testing import FaultPlan, OsviEmulator
from tests.testing.helpers import Api, Reply

SPEC_DIR = Path(__file__).parent / "spec"
SHARED_DIR = Path(__file__).resolve().parents[3] / "shared" / "api"
SEED = "inject_context.openapi.yaml"
CHAT_V1 = "osvi-chat-v1.yaml"
SERVER = "https://api.osvi.ai"


def _as_openapi_31(node: Any) -> Any:
    """Return the spec with 3.0's ``nullable: true`` rewritten as a 3.1 ``'null'`` type."""
    if isinstance(node, list):
        return [_as_openapi_31(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _as_openapi_31(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True and isinstance(node.get("type"), str):
        converted["type"] = [node["type"], "null"]
    return converted


def _load(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = _as_openapi_31(yaml.safe_load((SPEC_DIR / name).read_text()))
    return spec


SPECS = {SEED: OpenAPI.from_dict(_load(SEED)), CHAT_V1: OpenAPI.from_dict(_load(CHAT_V1))}


def _schema_validator(spec: str, schema: str) -> Draft202012Validator:
    """A JSON Schema validator for one named component schema of ``spec``."""
    resource = Resource.from_contents(_load(spec), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:spec", resource)
    return Draft202012Validator(
        {"$ref": f"urn:spec#/components/schemas/{schema}"}, registry=registry
    )


def _validate(spec: str, method: str, path: str, reply: Reply) -> None:
    """Raise unless ``reply`` is a documented answer to ``method path`` in ``spec``."""
    request = MockRequest(SERVER, method.lower(), path.partition("?")[0])
    response = MockResponse(
        reply.text.encode(), status_code=reply.status, content_type=reply.content_type
    )
    SPECS[spec].validate_response(request, response)


@pytest.mark.parametrize("name", [SEED, CHAT_V1])
def test_spec_copies_match_the_shared_originals(name: str) -> None:
    """The vendored spec equals ../shared/api's file whenever that file is present."""
    copy = (SPEC_DIR / name).read_text()
    assert copy.startswith("openapi: 3.1.0")
    shared = SHARED_DIR / name
    if shared.exists():
        assert copy == shared.read_text()


def test_the_validator_rejects_an_off_spec_body() -> None:
    """A body breaking ChatV1Error fails validation, so passing tests mean something."""
    bad = Reply(404, None, json.dumps({"success": "no", "error": 4}), "application/json")  # type: ignore[arg-type]
    with pytest.raises(Exception, match="not valid"):
        _validate(SEED, "POST", "/v1/chat/session/x/inject_context", bad)


Case = Callable[[Api, OsviEmulator, str], Awaitable[Reply]]


async def _ok(api: Api, emulator: OsviEmulator, session_id: str) -> Reply:
    return await api.inject(session_id, {"context": "Earlier call: wants a refund."})


async def _full_bucket(api: Api, emulator: OsviEmulator, session_id: str) -> Reply:
    for n in range(6):
        await api.inject(session_id, {"context": f"entry {n}"})
    return await api.inject(session_id, {"context": "latest"})


async def _missing(api: Api, emulator: OsviEmulator, session_id: str) -> Reply:
    return await api.inject(session_id, {})


async def _blank(api: Api, emulator: OsviEmulator, session_id: str) -> Reply:
    return await api.inject(session_id, {"context": "   "})


async def _not_a_string(api: Api, emulator: OsviEmulator, session_id: str) -> Reply:
    return await api.inject(session_id, {"context": 42})


async def _invalid_json(api: Api, emulator: OsviEmulator, session_id: str) -> Reply:
    return await api.inject(session_id, raw=b"{not json")


async def _no_token(api: Api, emulator: OsviEmulator, session_id: str) -> Reply:
    return await api.inject(session_id, {"context": "x"}, token=None)


async def _wrong_token(api: Api, emulator: OsviEmulator, session_id: str) -> Reply:
    return await api.inject(session_id, {"context": "x"}, token="0123456789abcdef")


async def _unknown(api: Api, emulator: OsviEmulator, session_id: str) -> Reply:
    return await api.inject(str(uuid.uuid4()), {"context": "x"})


async def _closed(api: Api, emulator: OsviEmulator, session_id: str) -> Reply:
    emulator.close_session(session_id)
    return await api.inject(session_id, {"context": "x"})


def _scripted(kind: str) -> Case:
    async def case(api: Api, emulator: OsviEmulator, session_id: str) -> Reply:
        emulator.fault_plan.script(session_id, [kind])
        return await api.inject(session_id, {"context": "x"})

    return case


INJECT_CASES: dict[str, tuple[Case, int]] = {
    "ok": (_ok, 200),
    "full bucket": (_full_bucket, 200),
    "context missing": (_missing, 400),
    "context blank": (_blank, 400),
    "context not a string": (_not_a_string, 400),
    "invalid json": (_invalid_json, 400),
    "no token": (_no_token, 401),
    "wrong token": (_wrong_token, 401),
    "unknown session": (_unknown, 404),
    "closed session": (_closed, 404),
    "engine_error": (_scripted("engine_error"), 502),
    "engine_rejected": (_scripted("engine_rejected"), 502),
    "ambiguous_502": (_scripted("ambiguous_502"), 502),
}


@pytest.mark.parametrize("spec", [SEED, CHAT_V1])
@pytest.mark.parametrize("case", list(INJECT_CASES))
async def test_inject_context_answers_follow_the_specs(
    api: Api, osvi_emulator: OsviEmulator, osvi_session_id: str, case: str, spec: str
) -> None:
    """Each documented inject_context outcome has its documented status and a valid body."""
    run, status = INJECT_CASES[case]
    reply = await run(api, osvi_emulator, osvi_session_id)
    assert reply.status == status
    _validate(spec, "POST", f"/v1/chat/session/{osvi_session_id}/inject_context", reply)


async def test_sibling_endpoints_follow_the_chat_v1_spec(
    api: Api, osvi_emulator: OsviEmulator
) -> None:
    """Create, active lookup and support answers validate against osvi-chat-v1.yaml."""
    pair = {"agent_uuid": "agent_IsZ3Q6Sf_60Eh26XQMGbz-R_og", "customer_id": "+15551112222"}
    created = await api.create({**pair, "input_fields": {"first_name": "Alex"}, "context": ["a"]})
    session_id = created.json["data"]["id"]
    path = f"/v1/chat/session/{session_id}/support"
    answers: list[tuple[str, str, Reply]] = [
        ("POST", "/v1/chat/session", created),
        ("POST", "/v1/chat/session", await api.create({})),
        ("POST", "/v1/chat/session", await api.create(pair, token=None)),
        ("GET", "/v1/chat/session/active", await api.active(pair)),
        ("GET", "/v1/chat/session/active", await api.active({**pair, "agent_uuid": "agent_x"})),
        ("POST", path, await api.support(session_id, {"command": "tell", "message": "Hi."})),
        ("POST", path, await api.support(session_id, {"command": "takeover"})),
        ("POST", path, await api.support(session_id, {"command": "tell", "message": "Hi."})),
        ("POST", path, await api.support(session_id, {"message": "Sam here."})),
        ("POST", path, await api.support(session_id, {"command": "whisper", "message": "VIP"})),
        ("POST", path, await api.support(session_id, {"command": "end"})),
        ("POST", path, await api.support(session_id, {"command": "close"})),
    ]
    osvi_emulator.fault_plan = FaultPlan(engine_error=1.0, all_endpoints=True)
    answers.append(("POST", "/v1/chat/session", await api.create(pair)))
    statuses = [reply.status for _, _, reply in answers]
    assert statuses == [200, 422, 401, 200, 404, 200, 200, 502, 200, 200, 200, 200, 502]
    for method, answer_path, reply in answers:
        _validate(CHAT_V1, method, answer_path, reply)


async def test_active_sessions_by_agent_follow_the_chat_v1_schema(
    api: Api, osvi_emulator: OsviEmulator
) -> None:
    """The lookup without agent_uuid answers a map that is a valid ActiveSessionsByAgent."""
    osvi_emulator.create_session(agent_uuid="agent_A", customer_id="cust")
    osvi_emulator.create_session(agent_uuid="agent_B", customer_id="cust")
    reply = await api.active({"customer_id": "cust"})
    assert (reply.status, reply.json["success"], sorted(reply.json["data"])) == (
        200,
        True,
        ["agent_A", "agent_B"],
    )
    _schema_validator(CHAT_V1, "ActiveSessionsByAgent").validate(reply.json["data"])
    for session in reply.json["data"].values():
        _schema_validator(CHAT_V1, "ChatSession").validate(session)
