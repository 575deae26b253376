"""Property-based checks of what users and servers can throw at the SDK."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aioresponses import aioresponses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osvi_async import ClientValidationError, OsviClient, ResponseDecodeError, RetryPolicy
from osvi_async._decode import decode_inject_context, parse_retry_after, status_error
from osvi_async._transport import HttpBackend
from osvi_async._validation import check_session_id
from osvi_async.errors import APIStatusError
from osvi_async.testing import OsviEmulator
from tests.support import BASE_URL, SESSION_ID, TOKEN

UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
envelope_like = st.fixed_dictionaries(
    {},
    optional={
        "success": st.booleans() | json_values,
        "data": st.fixed_dictionaries(
            {}, optional={"context": json_values, "session_id": json_values}
        )
        | json_values,
        "error": json_values,
        "errors": json_values,
        "upstream_body": json_values,
    },
)


@SETTINGS
@given(body=st.one_of(json_values, envelope_like))
def test_decoder_only_ever_raises_decode_errors(body: Any) -> None:
    """Any JSON document as a 200 body: a result, or ResponseDecodeError; nothing else."""
    raw = json.dumps(body).encode()
    try:
        result = decode_inject_context(200, raw, session_id=SESSION_ID, attempts=1)
    except ResponseDecodeError:
        return
    assert all(isinstance(entry, str) for entry in result.context)


@SETTINGS
@given(raw=st.binary(max_size=512))
def test_decoder_survives_arbitrary_bytes(raw: bytes) -> None:
    """Arbitrary bytes as a 200 body never crash the decoder with another exception."""
    try:
        result = decode_inject_context(200, raw, session_id=SESSION_ID, attempts=1)
    except ResponseDecodeError as error:
        assert error.status == 200  # noqa: PT017 - either outcome is allowed here
        return
    assert isinstance(result.context, tuple)


@SETTINGS
@given(
    status=st.integers(min_value=300, max_value=599),
    body=st.one_of(st.binary(max_size=256), json_values.map(lambda v: json.dumps(v).encode())),
    retry_after=st.none() | st.text(max_size=40),
)
def test_error_mapping_never_raises(status: int, body: bytes, retry_after: str | None) -> None:
    """Any error status, body and Retry-After map to a typed APIStatusError."""
    error = status_error(status, body, session_id=SESSION_ID, retry_after=retry_after, attempts=2)
    assert isinstance(error, APIStatusError)
    assert error.status == status
    assert error.retry_after is None or error.retry_after >= 0
    assert isinstance(error.code, str | None)


@SETTINGS
@given(value=st.text(max_size=60))
def test_retry_after_parsing_is_total(value: str) -> None:
    """parse_retry_after returns None or a non-negative number for any header text."""
    parsed = parse_retry_after(value)
    assert parsed is None or parsed >= 0


@SETTINGS
@given(
    candidate=st.one_of(
        st.text(max_size=60),
        st.sampled_from(
            [
                "../../v1/admin",
                "..%2F..%2Fadmin",
                SESSION_ID + "%2Fx",
                SESSION_ID + "/../x",
                SESSION_ID + "\r\nX-Injected: 1",
                SESSION_ID + "\n",
                " " + SESSION_ID,
                SESSION_ID.replace("4", "\uff14"),  # fullwidth digit
                SESSION_ID.replace("a", "\u0430"),  # Cyrillic a
                SESSION_ID.replace("-", "\u2010"),  # Unicode hyphen
                SESSION_ID + "?x=1",
                SESSION_ID + "#frag",
            ]
        ),
        st.builds(
            lambda prefix, suffix: prefix + SESSION_ID + suffix,
            st.text(max_size=3),
            st.text(max_size=3),
        ),
    )
)
def test_only_plain_uuids_pass_as_session_ids(candidate: str) -> None:
    """A session id is accepted only if it is exactly an ASCII UUID; everything else is refused."""
    try:
        accepted = check_session_id(candidate)
    except ClientValidationError:
        assert UUID.fullmatch(candidate) is None
        return
    assert accepted == candidate
    assert UUID.fullmatch(accepted) is not None
    assert accepted.isascii()


@pytest.mark.parametrize(
    "session_id",
    [
        "../../v1/admin",
        SESSION_ID + "%2F..",
        SESSION_ID + "\r\nX-Injected: 1",
        SESSION_ID.replace("a", "\u0430"),
    ],
)
async def test_hostile_session_ids_never_reach_the_wire(session_id: str) -> None:
    """The call raises before any request is made (aioresponses sees nothing)."""
    with aioresponses() as mocked:
        async with OsviClient(TOKEN, base_url=BASE_URL) as client:
            with pytest.raises(ClientValidationError):
                await client.inject_context(session_id, "x")
        assert mocked.requests == {}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # the backend: constant
)
@given(context=st.text(min_size=1, max_size=300).filter(lambda text: text.strip() != ""))
async def test_unicode_contexts_round_trip_byte_exact(
    context: str, http_backend: HttpBackend
) -> None:
    """Whatever valid text is sent is what the server stored, byte for byte (real socket)."""
    async with OsviEmulator() as emulator:
        session = emulator.create_session()
        async with OsviClient(
            emulator.api_token,
            base_url=emulator.base_url,
            retry=RetryPolicy.none(),
            http_backend=http_backend,
        ) as client:
            try:
                result = await client.inject_context(session, context)
            except ClientValidationError:
                assert any("\ud800" <= ch <= "\udfff" for ch in context)
                assert emulator.requests_for(session) == 0
                return
        [stored] = emulator.applied(session)
        assert stored.encode("utf-8") == context.encode("utf-8")
        assert result.context[-1] == context


class FormatsAsTraversal(str):
    """A session id whose formatting and str() put a traversal into any URL built from it."""

    __slots__ = ()

    def __format__(self, spec: str) -> str:
        return "../../admin%2F"

    def __str__(self) -> str:
        return "../../admin%2F"


async def test_str_subclass_session_id_reaches_the_real_session_path(
    http_backend: HttpBackend,
) -> None:
    """A str subclass with its own __format__: the server sees the real UUID path, once."""
    async with OsviEmulator() as emulator:
        session = emulator.create_session()
        async with OsviClient(
            emulator.api_token,
            base_url=emulator.base_url,
            retry=RetryPolicy.none(),
            http_backend=http_backend,
        ) as client:
            result = await client.inject_context(FormatsAsTraversal(session), "entry")
            async with client.inject_many([(FormatsAsTraversal(session), "bulk entry")]) as run:
                outcomes = [outcome async for outcome in run]
        assert emulator.applied(session) == ("entry", "bulk entry")
        assert emulator.requests_for(session) == 2
        assert emulator.stats.requests_total == 2
    assert result.context == ("entry",)
    assert [outcome.ok for outcome in outcomes] == [True]
