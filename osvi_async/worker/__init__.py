"""Injections through RabbitMQ: a `Publisher` for producers, a `Worker` that applies them.

Needs the `worker` extra (`pip install 'osvi-async[worker]'`, which brings aio-pika). See
docs/workers.md for the topology, the ordering and failure guarantees, and how to run many
workers on many machines.
"""

try:
    import aio_pika  # noqa: F401 - only to fail early with the install hint
except ImportError as error:  # pragma: no cover - the dev extra installs it
    raise ImportError(
        "osvi_async.worker needs aio-pika: pip install 'osvi-async[worker]'"
    ) from error

from osvi_async.worker._message import PoisonMessageError, decode, encode, ordering_key
from osvi_async.worker._publisher import Publisher
from osvi_async.worker._topology import (
    DEAD_LETTER_QUEUE,
    DEFAULT_PARTITIONS,
    EXCHANGE,
    partition_queue,
)
from osvi_async.worker._worker import Worker, WorkerStats

__all__ = [
    "DEAD_LETTER_QUEUE",
    "DEFAULT_PARTITIONS",
    "EXCHANGE",
    "PoisonMessageError",
    "Publisher",
    "Worker",
    "WorkerStats",
    "decode",
    "encode",
    "ordering_key",
    "partition_queue",
]
