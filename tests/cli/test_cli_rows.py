"""Bulk input rows addressed by customer and agent: what `read_records` makes of each row.

Pure parsing, no server: a row with `customer_id` and `agent_uuid` becomes a
`CustomerInjectRequest`, a row with a `session_id` an `InjectRequest`, and a row mixing the
two or naming only half a customer a malformed record whose problem names its line.
"""

from __future__ import annotations

import json

import pytest

from osvi_async import CustomerInjectRequest, InjectRequest
from osvi_async.cli._bulk_io import InputError, Record, detect_format, read_records

SID = "4718a326-417b-4dda-90d0-21fd65a11cb8"


def jsonl(*rows: dict[str, object]) -> list[Record]:
    """The records of these JSON objects, one per line."""
    lines = [json.dumps(row) + "\n" for row in rows]
    return list(read_records(lines, "jsonl", max_context_bytes=1024))


def csv(*lines: str) -> list[Record]:
    """The records of these CSV lines (the first is the header)."""
    return list(read_records([line + "\n" for line in lines], "csv", max_context_bytes=1024))


def test_jsonl_customer_row_becomes_a_customer_request() -> None:
    """customer_id and agent_uuid (a null session_id counts as absent): a CustomerInjectRequest."""
    records = jsonl(
        {"customer_id": "c1", "agent_uuid": "a1", "context": "x"},
        {"customer_id": "c2", "agent_uuid": "a1", "context": "y", "session_id": None},
        {"session_id": SID, "context": "z"},
    )
    assert [record.request for record in records] == [
        CustomerInjectRequest(customer_id="c1", agent_uuid="a1", context="x"),
        CustomerInjectRequest(customer_id="c2", agent_uuid="a1", context="y"),
        InjectRequest(session_id=SID, context="z"),
    ]
    assert [record.index for record in records] == [0, 1, 2]


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"session_id": SID, "customer_id": "c", "agent_uuid": "a", "context": "x"}, "one or"),
        ({"session_id": SID, "agent_uuid": "a", "context": "x"}, "one or the other"),
        ({"customer_id": "c", "context": "x"}, "go together"),
        ({"agent_uuid": "a", "context": "x"}, "go together"),
        ({"customer_id": "c", "agent_uuid": 7, "context": "x"}, "needs a JSON object"),
        ({"customer_id": "c", "agent_uuid": "a"}, "needs a JSON object"),
        ({"context": "x"}, "needs a JSON object"),
        ({"customer_id": "c\ud800", "agent_uuid": "a", "context": "x"}, "in customer_id"),
    ],
)
def test_jsonl_mixed_or_half_customer_rows_are_malformed(
    row: dict[str, object], problem: str
) -> None:
    """Both addresses, half a customer, a wrong type, a lone surrogate: malformed, line named."""
    [record] = jsonl(row)
    assert record.request is None
    assert record.problem is not None
    assert record.problem.startswith("line 1: ")
    assert problem in record.problem


def test_csv_customer_columns_make_customer_requests() -> None:
    """A header with customer_id and agent_uuid (any order): each row a CustomerInjectRequest,
    ids as written (padded ones too: the client refuses them, the reader does not fix them)."""
    records = csv("agent_uuid,context,customer_id", ' a1 ,"x, y", c1 ', "a2,z,c2")
    assert [record.request for record in records] == [
        CustomerInjectRequest(customer_id=" c1 ", agent_uuid=" a1 ", context="x, y"),
        CustomerInjectRequest(customer_id="c2", agent_uuid="a2", context="z"),
    ]


def test_csv_mixed_header_takes_either_address_per_row() -> None:
    """With all three id columns, each row gives one address; blank cells count as not given."""
    records = csv(
        "session_id,customer_id,agent_uuid,context",
        f"{SID},,,s",
        ",c1,a1,c",
        f"{SID},c1,a1,both",
        ",c1,,half",
        ",,,none",
        ",c1",
    )
    assert records[0].request == InjectRequest(session_id=SID, context="s")
    assert records[1].request == CustomerInjectRequest(
        customer_id="c1", agent_uuid="a1", context="c"
    )
    problems = [record.problem for record in records[2:]]
    assert problems == [
        "line 4: names a session_id and a customer_id/agent_uuid: give one or the other",
        "line 5: customer_id and agent_uuid go together: give both",
        "line 6: needs a session_id, or a customer_id and an agent_uuid",
        "line 7: too few columns",
    ]


def test_csv_session_only_header_reads_as_before() -> None:
    """session_id,context: a blank session id is still a request (the SDK refuses it later)."""
    records = csv("session_id,context", f"{SID},a", ",b")
    assert [record.request for record in records] == [
        InjectRequest(session_id=SID, context="a"),
        InjectRequest(session_id="", context="b"),
    ]


def test_csv_header_needs_a_whole_address() -> None:
    """A header with context and only customer_id (no agent_uuid, no session_id) is refused."""
    with pytest.raises(InputError, match="customer_id"):
        read_records(iter(["customer_id,context\n", "c,x\n"]), "csv", max_context_bytes=1024)


def test_a_customer_header_is_detected_as_csv() -> None:
    """A first line naming context, customer_id and agent_uuid means CSV; a JSON line does not."""
    assert detect_format("items.txt", "customer_id,agent_uuid,context\r\n") == "csv"
    assert detect_format("items.txt", "context,session_id\n") == "csv"
    assert detect_format("items.txt", "customer_id,context\n") == "jsonl"
    first = json.dumps({"customer_id": "c", "agent_uuid": "a", "context": "x"})
    assert detect_format("items.txt", first) == "jsonl"
