"""A private RabbitMQ for the test session: the `rabbitmq` fixture.

The worker's guarantees (per-session order, nothing lost, hand-over on failure) are properties of a
real broker, so its tests run one instead of a fake. Each session starts its own, per
../shared/brokers.md: its own directory, its own epmd on a free port (a daemon epmd on 4369 would
outlive the tests), free AMQP and distribution ports, the consistent-hash exchange plugin enabled
offline, and guest allowed from 127.0.0.1. Everything it starts is stopped by pid at the end,
and a small watchdog process kills it if the test process dies without its teardown.

Tests that kill the broker themselves use ``os.killpg(rabbitmq.pid, ...)``: the pid is the
``rabbitmq-server`` script's, and the Erlang VM is its child in the same process group.

Where RabbitMQ is not installed the tests that use it are skipped, except with
``OSVI_REQUIRE_BROKER=1`` (set by .ci/run), where they fail: in CI a missing broker is a broken
machine, not a reason to pass without running the worker's tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

import aio_pika
import aiormq.exceptions
import pytest

RABBITMQ_SERVER: Final = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
REQUIRE_BROKER_VARIABLE: Final = "OSVI_REQUIRE_BROKER"
# A fresh broker answers AMQP after ~6.5 s here; the limit only bounds one that never comes up.
STARTUP_LIMIT: Final = 60.0
# A SIGTERMed broker exits in ~1.1 s; past this limit its process group is killed.
STOP_LIMIT: Final = 30.0
LOG_TAIL_LINES: Final = 40
_PROBE_ERRORS: Final = (OSError, TimeoutError, EOFError, aiormq.exceptions.AMQPError)


def require_broker(server: Path, environ: Mapping[str, str]) -> None:
    """Skip the calling test when `server` is missing, or fail it when the environment requires
    a broker (``OSVI_REQUIRE_BROKER=1``); return quietly when `server` is there."""
    if server.exists():
        return
    reason = (
        f"RabbitMQ is not installed ({server} is missing): install it with "
        "`apt-get install -y --no-install-recommends rabbitmq-server` (.ci/run does)"
    )
    if environ.get(REQUIRE_BROKER_VARIABLE) == "1":
        pytest.fail(f"{reason}; {REQUIRE_BROKER_VARIABLE}=1 requires the broker tests to run")
    pytest.skip(reason)


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports nothing listens on right now (RabbitMQ needs numbers up front)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


async def _amqp_answers(url: str) -> bool:
    """Whether a full AMQP connection to `url` opens: the port alone opens before the broker
    has finished booting."""
    try:
        connection = await aio_pika.connect(url, timeout=2.0)
    except _PROBE_ERRORS:
        return False
    await connection.close()
    return True


# Run as its own process: kills the process groups it was told to watch once its stdin closes
# without a "forget" for them, i.e. when the test process died without running its teardown
# (SIGKILL, a `timeout` that fired). Otherwise a broker and an epmd would run on forever.
_WATCHDOG: Final = """
import os, signal, sys
groups = set()
for line in sys.stdin:
    command, pid = line.split()
    (groups.add if command == "watch" else groups.discard)(int(pid))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
"""


class _Watchdog:
    """Tells the watchdog process which process groups are ours right now."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # out of reach of a signal sent to the test's group
        )

    def _tell(self, line: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(f"{line}\n".encode())
        self._process.stdin.flush()

    def watch(self, pid: int) -> None:
        self._tell(f"watch {pid}")

    def forget(self, pid: int) -> None:
        self._tell(f"forget {pid}")

    def close(self) -> None:
        """End the watchdog; call once every watched group is stopped and forgotten."""
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait()


def _stop_group(process: subprocess.Popen[bytes], limit: float) -> None:
    """SIGTERM `process` (started as its own process group), wait for it, then SIGKILL whatever
    is left in its group (erl_child_setup, inet_gethost) so nothing outlives the tests."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=limit)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class RabbitMQ:
    """One private broker node: its directory, its ports and its processes.

    `start` and `stop` may alternate (a broker-restart test): the node comes back on the same
    ports with the same data directory, so durable queues and persistent messages survive.
    """

    def __init__(self, server: Path, directory: Path) -> None:
        self.directory = directory
        self.amqp_port, self.dist_port, self.epmd_port = _free_ports(3)
        self.url = f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"
        self.node_name = f"osvitest{self.amqp_port}@localhost"
        self.log_path = directory / "log" / "broker.log"
        self._server = server
        self._broker: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._watchdog: _Watchdog | None = None
        for name in ("mnesia", "log", "home"):
            (directory / name).mkdir(parents=True, exist_ok=True)
        (directory / "enabled_plugins").write_text("[rabbitmq_consistent_hash_exchange].\n")
        (directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}\nloopback_users = none\n"
        )
        (directory / "env.conf").touch()  # so /etc/rabbitmq/rabbitmq-env.conf is not read

    @property
    def pid(self) -> int:
        """The running broker's pid, also its process group (``os.killpg`` stops all of it).

        Raises:
            RuntimeError: the broker is stopped.
        """
        if self._broker is None:
            raise RuntimeError("the broker is stopped")
        return self._broker.pid

    def _environment(self) -> dict[str, str]:
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("RABBITMQ_", "ERL_"))
        }
        directory = self.directory
        return {
            **inherited,
            "HOME": str(directory / "home"),  # the Erlang cookie is written there
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": self.node_name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(directory / "env.conf"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"(no log at {self.log_path}: {exc})"
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def _start_epmd(self) -> None:
        """Our own epmd, started before the node: a node that finds none starts a daemon epmd,
        which detaches and would outlive the session."""
        if self._epmd is not None and self._epmd.poll() is None:
            return
        if self._watchdog is None:
            self._watchdog = _Watchdog()
        epmd = shutil.which("epmd") or "epmd"
        self._epmd = subprocess.Popen(
            [epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._watchdog.watch(self._epmd.pid)
        deadline = time.monotonic() + STARTUP_LIMIT
        while not _listening(self.epmd_port):
            if self._epmd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"epmd did not start listening on {self.epmd_port}")
            time.sleep(0.02)

    def start(self) -> float:
        """Start the broker (and epmd, once) and wait until an AMQP connection works.

        Returns:
            The seconds from start to the first working AMQP connection.

        Raises:
            RuntimeError: the broker is already running; or it exited or did not answer within
                `STARTUP_LIMIT` seconds (the message ends with the tail of its log, and its
                processes are stopped).
        """
        if self._broker is not None:
            if self._broker.poll() is None:
                raise RuntimeError("the broker is already running")
            self.stop()  # it died (a test killed it): reap what is left of its group
        self._start_epmd()
        started = time.monotonic()
        # The log is a file: the broker writes to stdout (RABBITMQ_LOGS=-) and a pipe nobody
        # reads would fill. Its own session, so stopping it takes its children too.
        with self.log_path.open("ab") as log:
            self._broker = subprocess.Popen(
                [str(self._server)],
                env=self._environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        assert self._watchdog is not None
        self._watchdog.watch(self._broker.pid)
        problem = self._wait_until_ready(self._broker, started + STARTUP_LIMIT)
        if problem is not None:
            self.stop()
            raise RuntimeError(f"RabbitMQ {problem}; log {self.log_path} ends:\n{self._log_tail()}")
        return time.monotonic() - started

    def _wait_until_ready(self, broker: subprocess.Popen[bytes], deadline: float) -> str | None:
        """None once AMQP works, else what went wrong. Probes AMQP only once the port is open
        (aio-pika logs every refused attempt), on a loop of its own, so neither the session's
        event loop nor the current-loop setting is touched."""
        loop = asyncio.new_event_loop()
        try:
            while not (
                _listening(self.amqp_port) and loop.run_until_complete(_amqp_answers(self.url))
            ):
                if broker.poll() is not None:
                    return f"exited with code {broker.returncode} before answering AMQP"
                if time.monotonic() > deadline:
                    return f"did not answer AMQP on {self.url} within {STARTUP_LIMIT:.0f} s"
                time.sleep(0.1)
        finally:
            loop.close()
        return None

    def stop(self) -> None:
        """SIGTERM the broker (a graceful stop: queues are flushed) and wait until every process
        it started has exited. Does nothing when it is stopped."""
        if self._broker is None:
            return
        broker, self._broker = self._broker, None
        _stop_group(broker, STOP_LIMIT)
        assert self._watchdog is not None
        self._watchdog.forget(broker.pid)

    def close(self) -> None:
        """Stop the broker, then our epmd and the watchdog."""
        self.stop()
        if self._epmd is not None:
            epmd, self._epmd = self._epmd, None
            _stop_group(epmd, STOP_LIMIT)
            assert self._watchdog is not None
            self._watchdog.forget(epmd.pid)
        if self._watchdog is not None:
            watchdog, self._watchdog = self._watchdog, None
            watchdog.close()


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    """A private RabbitMQ on 127.0.0.1 for the session; `.url` is its guest AMQP URL."""
    require_broker(RABBITMQ_SERVER, os.environ)
    broker = RabbitMQ(RABBITMQ_SERVER, tmp_path_factory.mktemp("rabbitmq"))
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture
async def broker(rabbitmq: RabbitMQ) -> str:
    """The private broker's URL, with no osvi topology declared yet (see `remove_topology`)."""
    await remove_topology(rabbitmq.url)
    return rabbitmq.url


async def remove_topology(url: str) -> None:
    """Delete the exchanges and queues any test may have declared, whatever its partition
    count: a test with another P than the one before must not inherit its bindings (keys would
    hash to queues nobody consumes)."""
    from osvi_async.worker import DEAD_LETTER_QUEUE, EXCHANGE, partition_queue
    from osvi_async.worker._topology import DEAD_LETTER_EXCHANGE

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in [*(partition_queue(i) for i in range(_MOST_PARTITIONS)), DEAD_LETTER_QUEUE]:
            await channel.queue_delete(name)
        for exchange in (EXCHANGE, DEAD_LETTER_EXCHANGE):
            await channel.exchange_delete(exchange)


_MOST_PARTITIONS: Final = 64
