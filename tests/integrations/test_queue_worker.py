"""examples/queue_worker.py against a real RabbitMQ (the `broker` fixture) and the emulator:
messages published, the example consuming them, SIGTERM mid-load, nothing lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re

import aio_pika

from osvi_async.testing import FaultPlan, OsviEmulator
from osvi_async.worker import DEAD_LETTER_QUEUE, Publisher, partition_queue
from tests.integrations._harness import AGENT, LEAK_MARKERS, LIMIT, ExampleProcess

PARTITIONS = 4
CUSTOMERS = tuple(f"cust-{number:02}" for number in range(10))
NOTES_PER_CUSTOMER = 30
SIGNAL_AFTER = 30
# Each session's lane sends one inject at a time: 10 sessions at 50 ms each apply about 200
# notes a second, so at SIGTERM most of the 300 are still queued or prefetched.
INJECT_LATENCY = 0.05


async def _queued(broker: str, expected: int) -> dict[str, list[str]]:
    """customer -> the notes left in the partition queues, in queue order; takes them.

    Consumes (quorum queues with a single active consumer refuse basic.get) until `expected`
    notes came, or `LIMIT` passed: then the missing ones are lost, and the test's comparison
    shows which.
    """
    taken: list[tuple[int, str, str]] = []
    all_taken = asyncio.Event()

    async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        body = json.loads(message.body)
        taken.append((message.delivery_tag or 0, body["customer_id"], body["context"]))
        if len(taken) >= expected:
            all_taken.set()

    connection = await aio_pika.connect(broker)
    async with connection:
        channel = await connection.channel()
        for index in range(PARTITIONS):
            queue = await channel.get_queue(partition_queue(index))
            await queue.consume(take, no_ack=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_taken.wait(), LIMIT)
        dead = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
        assert dead.declaration_result.message_count == 0
    queued: dict[str, list[str]] = {customer: [] for customer in CUSTOMERS}
    # One task per delivery may run out of order; delivery tags give the queue order.
    for _, customer, note in sorted(taken):
        queued[customer].append(note)
    return queued


async def test_example_stops_on_sigterm_mid_load_and_loses_nothing(
    broker: str, osvi_emulator: OsviEmulator
) -> None:
    """300 notes published, SIGTERM after 30 applied: each note applied once or still queued,
    never both, in publish order per session; exit 0 with nothing leaked."""
    sessions = {
        customer: osvi_emulator.create_session(agent_uuid=AGENT, customer_id=customer)
        for customer in CUSTOMERS
    }
    published = {
        customer: [f"note {n} for {customer}" for n in range(NOTES_PER_CUSTOMER)]
        for customer in CUSTOMERS
    }
    async with Publisher(broker, partitions=PARTITIONS) as publisher:
        for n in range(NOTES_PER_CUSTOMER):
            for customer in CUSTOMERS:
                await publisher.publish_for_customer(customer, AGENT, published[customer][n])
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=INJECT_LATENCY)

    def applied() -> int:
        return sum(len(osvi_emulator.applied(session)) for session in sessions.values())

    worker = await ExampleProcess.start(
        ["examples/queue_worker.py"],
        {
            "OSVI_API_TOKEN": osvi_emulator.api_token,
            "OSVI_BASE_URL": osvi_emulator.base_url,
            "OSVI_BROKER_URL": broker,
            "OSVI_PARTITIONS": str(PARTITIONS),
        },
    )
    try:
        async with asyncio.timeout(LIMIT):
            while applied() < SIGNAL_AFTER:
                assert worker.process.returncode is None, worker.output
                await asyncio.sleep(0.005)
        worker.terminate()
        status = await worker.wait()
    finally:
        await worker.kill()
    landed_total = sum(len(osvi_emulator.applied(session)) for session in sessions.values())
    queued = await _queued(broker, len(CUSTOMERS) * NOTES_PER_CUSTOMER - landed_total)

    stderr = "\n".join(worker.stderr)
    assert status == 0, worker.output
    assert [marker for marker in LEAK_MARKERS if marker in stderr] == [], worker.output
    stats = re.search(r"stopped: received=(\d+) succeeded=(\d+) possible_duplicates=(\d+)", stderr)
    assert stats is not None, worker.output
    for customer, session in sessions.items():
        # Applied once each, in publish order, and the rest still queued, in order after them.
        assert [*osvi_emulator.applied(session), *queued[customer]] == published[customer]
    succeeded, duplicates = int(stats.group(2)), int(stats.group(3))
    assert succeeded == landed_total
    assert duplicates == 0
    # Mid-load: the stop came with notes applied and notes left.
    queued_total = sum(len(notes) for notes in queued.values())
    assert landed_total >= SIGNAL_AFTER
    assert queued_total > 0
    print(
        f"queue worker: published {len(CUSTOMERS) * NOTES_PER_CUSTOMER}, "
        f"landed {landed_total}, still queued {queued_total}, exit {status}"
    )
