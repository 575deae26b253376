"""A queue worker: apply the injections other services publish to RabbitMQ, until SIGTERM.

A web backend or an event handler publishes "add this note to the customer's chat" and
returns at once; this process applies the notes, one at a time per session, in the order
they were published, and any number of copies of it can run side by side (see
docs/workers.md)::

    # producer side, anywhere:
    async with Publisher(broker_url) as publisher:
        await publisher.publish_for_customer("+15551112222", "agent_...", "Call summary ...")

Run it against the emulator (or the real API, with your token) and a local RabbitMQ::

    export OSVI_API_TOKEN=tok_0123456789ab OSVI_BASE_URL=http://127.0.0.1:8081
    export OSVI_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/ OSVI_PARTITIONS=16
    python -m osvi_async.testing --port 8081 --token $OSVI_API_TOKEN &
    python examples/queue_worker.py

Needs `pip install 'osvi-async[worker]'`. What SIGTERM (or Ctrl+C) does: the worker starts
nothing new, lets the injections in flight finish (up to `grace` seconds) and acks them; every
message it has not applied goes back to its queue, in order, for the next worker. Nothing is
lost, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from osvi_async import InjectOutcome, OsviClient
from osvi_async.worker import DEFAULT_PARTITIONS, Worker

logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
logger = logging.getLogger("queue_worker")


def log_outcome(outcome: InjectOutcome, message_id: str | None) -> None:
    """One line per message settled: applied, flagged as a possible duplicate, or failed."""
    if outcome.error is not None:
        logger.warning("message %s failed: %s", message_id, outcome.error)
    elif outcome.result is not None and outcome.result.possible_duplicate:
        logger.warning("message %s applied, possibly twice: check its session", message_id)


async def main() -> None:
    """Consume until SIGTERM or SIGINT, then stop gracefully and log what was done."""
    broker_url = os.environ.get("OSVI_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
    # The same P as every publisher and worker of the deployment (docs/workers.md).
    partitions = int(os.environ.get("OSVI_PARTITIONS", DEFAULT_PARTITIONS))
    async with (
        OsviClient(timeout=10.0) as client,
        Worker(
            client, broker_url, partitions=partitions, grace=10.0, on_outcome=log_outcome
        ) as worker,
    ):
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        logger.info("consuming from %s", broker_url.rsplit("@", 1)[-1])
        await worker.wait()
    stats = worker.stats
    logger.info(
        "stopped: received=%d succeeded=%d possible_duplicates=%d dead_lettered=%d returned=%d",
        stats.received,
        stats.succeeded,
        stats.possible_duplicates,
        stats.dead_lettered,
        stats.returned,
    )


if __name__ == "__main__":
    asyncio.run(main())
