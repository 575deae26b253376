"""What the broker commands (`publish`, `worker`, `dead-letters`) share: the `--broker` URL,
reaching the broker once before doing anything, and keeping secrets and aio-pika's noise out
of what they print.

- The URL is checked when the arguments are parsed (an `amqp://` or `amqps://` URL with a
  host and a valid port: exit 2 otherwise) and shown only with its password replaced by
  `***`; `Redactor` also takes the password and the API token out of every line printed.
- `connect_or_exit` opens one connection first: a broker that cannot be reached (refused,
  unknown host, bad credentials) is exit 3 with one line, before anything is read or sent.
- `check_partitions` refuses a `--partitions` other than the deployment's (exit 2): the
  topology is declared by whoever connects, so a wrong P would add or leave queues bound to
  the consistent-hash exchange, move keys to other partitions and break per-session order.
- aio-pika reports a failed connection attempt three times over: an `aiormq` error log, the
  exception, and a `RuntimeWarning` when its half-built connection is collected. `quiet_amqp`
  keeps the first and the last off stderr, so a failure is the one line we print.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final
from urllib.parse import SplitResult, urlsplit

import click

from osvi_async.cli._common import EXIT_UNREACHABLE, EXIT_USAGE, REDACTED, fail
from osvi_async.cli._output import visible

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection

CONNECT_TIMEOUT: Final = 10.0
"""Seconds the first connection may take before the broker counts as unreachable."""
_SCHEMES: Final = ("amqp", "amqps")
_MOST_PARTITIONS: Final = 1 << 16
_AMQP_LOGGERS: Final = ("aiormq", "aio_pika")


class BrokerUrl(click.ParamType[str, object]):
    """An `amqp://` or `amqps://` URL with a host: anything else is refused at parse time."""

    name = "amqp_url"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        """Check `value`; the message never repeats the URL (it may hold a password)."""
        text = str(value)
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            self.fail("is not a valid URL (give amqp://USER:PASSWORD@HOST:PORT/VHOST)", param, ctx)
        if parts.scheme not in _SCHEMES or not parts.hostname:
            self.fail("must be an amqp:// or amqps:// URL with a host", param, ctx)
        if port == 0:
            self.fail("has port 0", param, ctx)
        return text


def shown_url(url: str) -> str:
    """The URL with its password (if any) replaced by `***`, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:***@{host}"
    return SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment).geturl()


class Redactor:
    """Takes the API token and the broker's password out of text before it is printed."""

    def __init__(self, *secrets: str | None) -> None:
        """Redact each non-empty secret (longest first, so one inside another goes whole)."""
        self._secrets = sorted({secret for secret in secrets if secret}, key=len, reverse=True)

    @classmethod
    def of(cls, broker_url: str, token: str | None = None) -> Redactor:
        """Redact the URL's password (as written and percent-decoded) and the token."""
        parts = urlsplit(broker_url)
        raw_password = parts.netloc.rpartition("@")[0].partition(":")[2] if parts.password else None
        return cls(parts.password, raw_password, token)

    def __call__(self, text: str) -> str:
        """`text` with every secret replaced by `[REDACTED]` and control characters escaped."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return visible(text)


@contextlib.contextmanager
def quiet_amqp() -> Iterator[None]:
    """Keep aio-pika's own error logs and its un-awaited-close warning off stderr."""
    loggers = [logging.getLogger(name) for name in _AMQP_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="coroutine 'Connection.close' was never awaited"
            )
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def unreachable(url: str, error: BaseException, redact: Redactor) -> click.exceptions.Exit:
    """Print the one line for a broker that cannot be reached; returns exit 3 to raise."""
    reason = redact(str(error) or type(error).__name__)
    return fail(
        f"cannot reach the broker at {shown_url(url)}: {type(error).__name__}: {reason}",
        EXIT_UNREACHABLE,
    )


async def connect_or_exit(url: str, redact: Redactor) -> AbstractConnection:
    """A connection to the broker, or exit 3 with one line (refused, unknown host, bad login)."""
    import aio_pika  # noqa: PLC0415 - the worker extra, loaded by the commands that need it

    try:
        return await aio_pika.connect(url, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as error:
        raise unreachable(url, error, redact) from None


async def _queue_exists(connection: AbstractConnection, name: str) -> bool:
    """A passive declare on a channel of its own (a missing queue closes the channel)."""
    import aio_pika  # noqa: PLC0415

    channel = await connection.channel()
    try:
        await channel.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return False
    with contextlib.suppress(Exception):
        await channel.close()
    return True


async def deployed_partitions(connection: AbstractConnection) -> int:
    """How many partition queues (`osvi.inject.p0`, `p1`, ...) the broker has (0: none yet)."""
    from osvi_async.worker import partition_queue  # noqa: PLC0415

    if not await _queue_exists(connection, partition_queue(0)):
        return 0
    low, high = 1, 2  # p{low - 1} exists; find a missing p{high - 1}
    while high <= _MOST_PARTITIONS and await _queue_exists(connection, partition_queue(high - 1)):
        low, high = high, high * 2
    while high - low > 1:  # p{low - 1} exists, p{high - 1} does not
        middle = (low + high) // 2
        if await _queue_exists(connection, partition_queue(middle - 1)):
            low = middle
        else:
            high = middle
    return low


async def check_partitions(connection: AbstractConnection, partitions: int) -> None:
    """Exit 2 with one line if the broker already has another number of partition queues."""
    deployed = await deployed_partitions(connection)
    if deployed in (0, partitions):
        return
    raise fail(
        f"--partitions is {partitions}, but the broker has {deployed} partition queues "
        f"(osvi.inject.p0 to p{deployed - 1}): pass --partitions {deployed}. Changing the "
        "number of partitions moves sessions to other queues and breaks their order",
        EXIT_USAGE,
    )
