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
