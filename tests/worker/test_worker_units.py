"""Worker pieces that need no broker: the message codec, and a stop while connecting."""

from __future__ import annotations

import asyncio
import json

import pytest

from osvi_async import CustomerInjectRequest, InjectRequest, OsviClient
from osvi_async.worker import PoisonMessageError, Worker, decode, encode

SESSION = "4718a326-417b-4dda-90d0-21fd65a11cb8"


def test_a_message_round_trips_with_its_ordering_key() -> None:
    """Both addresses encode, decode back, and key by session (lower-cased) or pair."""
    body, key = encode(InjectRequest(SESSION.upper(), "note"))
    assert key == SESSION
    assert decode(body) == InjectRequest(SESSION.upper(), "note")
    body, key = encode(CustomerInjectRequest("+1555", "agent_a", "note"))
    assert key == "+1555\0agent_a"
    assert decode(body, redelivered=True) == CustomerInjectRequest(
        "+1555", "agent_a", "note", may_have_been_applied=True
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (json.dumps({"v": True, "session_id": SESSION, "context": "x"}).encode(), "version"),
        (json.dumps({"v": 1.0, "session_id": SESSION, "context": "x"}).encode(), "version"),
        (json.dumps({"v": 2, "session_id": SESSION, "context": "x"}).encode(), "version"),
        (json.dumps({"v": 1, "session_id": "../x", "context": "x"}).encode(), "session UUID"),
        (json.dumps({"v": 1, "customer_id": "c", "context": "x"}).encode(), "agent_uuid"),
        (json.dumps({"v": 1, "session_id": SESSION, "context": " "}).encode(), "context"),
    ],
)
def test_what_is_not_an_injection_is_poison_with_a_reason(body: bytes, reason: str) -> None:
    """Anything else is a PoisonMessageError naming what is wrong (a version must be the
    integer 1: true and 1.0 are not)."""
    with pytest.raises(PoisonMessageError, match=reason):
        decode(body)


async def test_stop_ends_a_worker_stuck_connecting_to_a_silent_broker() -> None:
    """A broker that accepts the connection and never answers: stop() still ends the worker
    at once, instead of after the connect timeout."""

    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with (
        server,
        OsviClient("0123456789abcdef", base_url="http://127.0.0.1:9") as client,
    ):
        worker = Worker(client, f"amqp://guest:guest@127.0.0.1:{port}/")
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.3)
        worker.stop()
        await asyncio.wait_for(task, 2)
        assert worker.stats.cycles == 0
        for writer in accepted:
            writer.close()
            await writer.wait_closed()
