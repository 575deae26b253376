"""Both JSON backends encode and decode what the API exchanges identically."""

from __future__ import annotations

import json

import pytest

from osvi_async import _json

SAMPLES = ["plain", "Zoë 👋 — 電話", 'quote " and backslash \\', "line\nbreak\ttab", "\x00\x1f"]


@pytest.mark.parametrize("text", SAMPLES)
def test_backends_agree_on_request_bodies(text: str) -> None:
    """stdlib and orjson bodies parse back to the same document, byte-exact text."""
    assert _json.BACKEND == "orjson"  # the dev extra installs it, so both paths are tested
    for dumps in (_json.stdlib_dumps, _json.orjson_dumps):
        body = dumps({"context": text})
        assert json.loads(body.decode("utf-8")) == {"context": text}
        assert _json.stdlib_loads(body) == _json.loads(body) == {"context": text}


def test_both_backends_refuse_lone_surrogates_the_same_way() -> None:
    """Text UTF-8 cannot carry is a UnicodeEncodeError from either backend."""
    for dumps in (_json.stdlib_dumps, _json.orjson_dumps):
        with pytest.raises(UnicodeEncodeError):
            dumps({"context": "a\ud800b"})


@pytest.mark.parametrize("body", [b"{", b"\xff\xfe", b"nan?", b""])
def test_both_backends_refuse_non_json_with_value_error(body: bytes) -> None:
    """Malformed bodies raise ValueError (the decoder turns it into ResponseDecodeError)."""
    for loads in (_json.stdlib_loads, _json.loads):
        with pytest.raises(ValueError):  # noqa: PT011 - the type is the contract
            loads(body)


@pytest.mark.parametrize("text", SAMPLES)
def test_inject_bodies_written_directly_match_encoding_a_dict(text: str) -> None:
    """The hand-framed inject body is byte for byte what encoding the dict gives."""
    for dumps, dumps_string in (
        (_json.stdlib_dumps, _json.stdlib_dumps_string),
        (_json.orjson_dumps, _json.orjson_dumps),
    ):
        assert b'{"context":' + dumps_string(text) + b"}" == dumps({"context": text})


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":[1,2.5,"x",null,true]}',
        b' {"a":1} ',  # whitespace around the value
        b'{"a":1}\n',
        b'"\\ud83d\\ude00"',  # a surrogate pair: one emoji
        b'{"a":"\xc3\xbc"}',
    ],
)
def test_both_backends_decode_json_alike(body: bytes) -> None:
    """The direct scan of the stdlib path gives what orjson gives."""
    assert repr(_json.stdlib_loads(body)) == repr(_json.orjson.loads(body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":1} x',
        b'{"a":1}{}',
        b"[1,]",
        b"\x00",
        b" ",
        b"\xef\xbb\xbf" + b'{"a":1}',  # a UTF-8 byte order mark
        '{"a":"\u00fc"}'.encode("utf-16"),
        b"NaN",
        b"[-Infinity]",
        b"[1e400]",
        b'"\\ud800"',  # a lone surrogate: no UTF-8 can carry it
        b'{"\\uDC00":1}',
    ],
)
def test_both_backends_refuse_what_is_not_strict_json(body: bytes) -> None:
    """What json.loads would take but orjson refuses raises ValueError on both paths."""
    for loads in (_json.stdlib_loads, _json.orjson.loads):
        with pytest.raises(ValueError):  # noqa: PT011 - the type is the contract
            loads(body)
