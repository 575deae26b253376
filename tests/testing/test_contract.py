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
map of sessions (or an empty one) matches both and ``oneOf`` rejects it. That one answer is
checked against ``ActiveSessionsByAgent`` directly.

Every endpoint is exercised through ``CASES``: its successes (each support command, inbound
resolving, resuming and in support mode), 401, 404, 400/422 validation errors, 429 and the
502s with and without ``upstream_body``. The reverse proxy's HTML pages (fault kinds
``proxy_html_502``, ``unavailable``, ``gateway_timeout``) are left out: they are the proxy's
answers, not the API's, and the spec rightly does not describe them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from osvi_async.testing import OsviEmulator
from tests.testing.helpers import AGENT, DEFAULT, NO_BODY, Api, Reply

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


InjectCase = Callable[[Api, OsviEmulator, str], Awaitable[Reply]]


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


def _scripted(kind: str) -> InjectCase:
    async def case(api: Api, emulator: OsviEmulator, session_id: str) -> Reply:
        emulator.fault_plan.script(session_id, [kind])
        return await api.inject(session_id, {"context": "x"})

    return case


INJECT_CASES: dict[str, tuple[InjectCase, int]] = {
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


async def test_no_active_sessions_is_an_empty_map(api: Api) -> None:
    """A customer without sessions gets 200 with an empty ActiveSessionsByAgent map."""
    reply = await api.active({"customer_id": "nobody"})
    assert (reply.status, reply.json) == (200, {"success": True, "data": {}})
    _schema_validator(CHAT_V1, "ActiveSessionsByAgent").validate(reply.json["data"])


# --- Every endpoint, every answer ------------------------------------------------------------

PAIR = {"agent_uuid": AGENT, "customer_id": "+15551112222"}
MESSAGE = {**PAIR, "content": "Hi, I need help."}

Setup = Callable[[Api, OsviEmulator, str], Awaitable[object]]
"""Prepares the state a case needs, given the pair's open session."""


@attrs.frozen
class Case:
    """One request to one endpoint and the status the emulator must answer it with."""

    endpoint: str
    body: object = NO_BODY
    status: int = 200
    setup: Setup | None = None
    raw: bytes | None = None
    token: object = DEFAULT
    unknown_session: bool = False


def _fault(endpoint: str, kind: str) -> Setup:
    async def setup(api: Api, emulator: OsviEmulator, session_id: str) -> None:
        emulator.fault_plan.script_endpoint(endpoint, [kind])

    return setup


def _support_first(body: dict[str, str]) -> Setup:
    async def setup(api: Api, emulator: OsviEmulator, session_id: str) -> None:
        assert (await api.support(session_id, body)).status == 200

    return setup


async def _dormant(api: Api, emulator: OsviEmulator, session_id: str) -> None:
    emulator.make_dormant(session_id)


async def _closed(api: Api, emulator: OsviEmulator, session_id: str) -> None:
    emulator.close_session(session_id)


_TAKEOVER = _support_first({"command": "takeover"})


def _faults(endpoint: str, body: object) -> dict[str, Case]:
    """The JSON answers a fault plan gives ``endpoint`` (not the proxy's HTML pages).

    inject_context is left without the 429: its operation lists its statuses and no
    ``default``, so the spec has no place for a rate limit there (a gap in the spec).
    """
    faults = [("engine_error", 502), ("engine_rejected", 502), ("ambiguous_502", 502)]
    if endpoint != "inject_context":
        faults.append(("rate_limited", 429))
    return {
        f"{endpoint} {kind}": Case(endpoint, body, status, _fault(endpoint, kind))
        for kind, status in faults
    }


CASES: dict[str, Case] = {
    # POST /v1/chat/session
    "create full": Case(
        "create_session", {**PAIR, "input_fields": {"first_name": "Alex"}, "context": ["a"]}
    ),
    "create minimal": Case("create_session", PAIR),
    "create missing fields": Case("create_session", {}, 422),
    "create mistyped": Case("create_session", {**PAIR, "input_fields": [], "context": "a"}, 422),
    "create invalid json": Case("create_session", raw=b"{", status=400),
    "create no token": Case("create_session", PAIR, 401, token=None),
    **_faults("create_session", PAIR),
    # GET /v1/chat/session/active with agent_uuid (without it: the tests above)
    "active one": Case("active_session", PAIR),
    "active dormant": Case("active_session", PAIR, setup=_dormant),
    "active in support mode": Case("active_session", PAIR, setup=_TAKEOVER),
    "active none": Case("active_session", PAIR, 404, _closed),
    "active no customer": Case("active_session", {"agent_uuid": AGENT}, 422),
    "active no token": Case("active_session", PAIR, 401, token=None),
    **_faults("active_session", PAIR),
    # POST /v1/chat/inbound
    "inbound": Case("inbound", MESSAGE),
    "inbound opens a session": Case("inbound", MESSAGE, setup=_closed),
    "inbound resumes": Case("inbound", MESSAGE, setup=_dormant),
    "inbound in support mode": Case("inbound", MESSAGE, setup=_TAKEOVER),
    "inbound asks for a human": Case("inbound", {**MESSAGE, "content": "A human, please."}),
    "inbound explicit session": Case("inbound", {**MESSAGE, "session_id": "<session>"}),
    "inbound closed session": Case("inbound", {**MESSAGE, "session_id": "<session>"}, 404, _closed),
    "inbound missing fields": Case("inbound", {}, 422),
    "inbound mistyped": Case("inbound", {**MESSAGE, "content": 3, "session_id": 4}, 422),
    "inbound invalid json": Case("inbound", raw=b"[", status=400),
    "inbound no token": Case("inbound", MESSAGE, 401, token=None),
    **_faults("inbound", MESSAGE),
    # POST /v1/chat/session/{id}/support
    "takeover": Case("support", {"command": "takeover"}),
    "takeover with message": Case("support", {"command": "takeover", "message": "Sam joins."}),
    "tell": Case("support", {"command": "tell", "message": "Offer a callback."}),
    "whisper": Case("support", {"command": "whisper", "message": "VIP."}),
    "end": Case("support", {"command": "end"}, setup=_TAKEOVER),
    "close": Case("support", {"command": "close"}),
    "plain message": Case("support", {"message": "Hi, Sam here."}, setup=_TAKEOVER),
    "tell during takeover": Case("support", {"command": "tell", "message": "x"}, 502, _TAKEOVER),
    "plain message in ai mode": Case("support", {"message": "Hi, Sam here."}, 502),
    "support unknown session": Case("support", {"command": "end"}, 404, unknown_session=True),
    "support closed session": Case("support", {"command": "end"}, 404, _closed),
    "unknown command": Case("support", {"command": "dance"}, 422),
    "message missing": Case("support", {"command": "tell"}, 422),
    "support invalid json": Case("support", raw=b"nope", status=400),
    "support no token": Case("support", {"command": "end"}, 401, token=None),
    **_faults("support", {"command": "whisper", "message": "VIP."}),
    # POST /v1/chat/session/{id}/inject_context (the seed's cases: the tests above)
    **_faults("inject_context", {"context": "x"}),
}


async def _send(api: Api, case: Case, session_id: str) -> tuple[str, str, Reply]:
    """Send ``case`` and return the method and path it used with the answer."""
    body = case.body
    if isinstance(body, dict) and body.get("session_id") == "<session>":
        body = {**body, "session_id": session_id}
    kwargs: dict[str, Any] = {"token": case.token, "raw": case.raw}
    if case.endpoint == "active_session":
        assert isinstance(body, dict)
        reply = await api.active(body, token=case.token)
        return "GET", "/v1/chat/session/active", reply
    if case.endpoint == "create_session":
        return "POST", "/v1/chat/session", await api.create(body, **kwargs)
    if case.endpoint == "inbound":
        return "POST", "/v1/chat/inbound", await api.inbound(body, **kwargs)
    target = str(uuid.uuid4()) if case.unknown_session else session_id
    path = f"/v1/chat/session/{target}/{case.endpoint}"
    return "POST", path, await api.request("POST", path, body=body, **kwargs)


def test_the_cases_cover_every_endpoint_and_status() -> None:
    """The table below reaches each endpoint with 200, 401, 422 or 400, 429 and 502 answers."""
    statuses = {(case.endpoint, case.status) for case in CASES.values()}
    for endpoint in ("create_session", "active_session", "inbound", "support"):
        assert {200, 401, 429, 502} <= {status for name, status in statuses if name == endpoint}
    assert {("active_session", 404), ("inbound", 404), ("support", 404)} <= statuses
    assert {("create_session", 422), ("inbound", 422), ("support", 422)} <= statuses


@pytest.mark.parametrize("name", list(CASES))
async def test_every_endpoint_answers_per_the_chat_v1_spec(
    api: Api, osvi_emulator: OsviEmulator, name: str
) -> None:
    """Each endpoint's answer has the expected status and a body osvi-chat-v1.yaml allows."""
    case = CASES[name]
    session_id = osvi_emulator.create_session(**PAIR)
    if case.setup is not None:
        await case.setup(api, osvi_emulator, session_id)
    method, path, reply = await _send(api, case, session_id)
    assert reply.status == case.status, reply.text
    assert reply.content_type == "application/json"
    _validate(CHAT_V1, method, path, reply)


async def test_502s_carry_an_upstream_body_only_when_the_engine_sent_one(
    api: Api, osvi_emulator: OsviEmulator
) -> None:
    """Engine refusals carry state/reason; unreachable and failed-after-commit carry null."""
    session_id = osvi_emulator.create_session(**PAIR)
    osvi_emulator.fault_plan.script_endpoint("inbound", ["engine_error", "ambiguous_502"])
    bodies = [
        (await api.inbound(MESSAGE)).json,
        (await api.inbound(MESSAGE)).json,
        (await api.support(session_id, {"message": "Hi"})).json,
    ]
    assert [body["upstream_body"] for body in bodies] == [
        None,
        None,
        {"state": "rejected", "reason": "plain_message_requires_support_mode"},
    ]


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/v1/chat/inbound", {"session_id": "s", "reply": "r", "help_requested": "yes"}),
        ("/v1/chat/session/s/support", {"state": "ok", "session_id": "s"}),
        ("/v1/chat/session", {"id": "s", "mode": "human"}),
    ],
)
def test_the_validator_rejects_off_spec_answers_of_each_endpoint(
    path: str, data: dict[str, object]
) -> None:
    """A 200 that breaks its endpoint's schema fails, so the table above checks real schemas."""
    bad = Reply(200, None, json.dumps({"success": True, "data": data}), "application/json")  # type: ignore[arg-type]
    with pytest.raises(Exception, match="not valid"):
        _validate(CHAT_V1, "POST", path, bad)
