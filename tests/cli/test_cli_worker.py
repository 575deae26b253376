"""`osvi-async publish`, `worker` and `dead-letters` as real processes, against the private
RabbitMQ and the emulator: what the emulator applied, in which order, what the reports and
the queues hold, and the one line each failure prints."""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aio_pika
import pytest

from osvi_async.testing import FaultPlan, OsviEmulator
from osvi_async.worker import DEAD_LETTER_QUEUE, Publisher, partition_queue
from tests.brokers.rabbit import RabbitMQ
from tests.chaos._cli import cli_env

PARTITIONS: Final = 4
P: Final = ("--partitions", str(PARTITIONS))
UNKNOWN_SESSION: Final = "00000000-0000-4000-8000-000000000000"


@dataclass
class Process:
    """One `osvi-async` process; stdout and stderr go to files (never a pipe that fills)."""

    process: asyncio.subprocess.Process
    stdout_path: Path
    stderr_path: Path

    @property
    def stdout(self) -> str:
        """What it wrote to stdout so far."""
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        """What it wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    async def wait(self, timeout: float = 60.0) -> int:
        """Its exit code."""
        return await asyncio.wait_for(self.process.wait(), timeout=timeout)


_started = 0
_running: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
async def _kill_leftovers() -> AsyncIterator[None]:
    """A test that failed midway leaves no worker running (it would outlive the broker)."""
    yield
    while _running:
        process = _running.pop()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def start(emulator: OsviEmulator, workdir: Path, *args: str) -> Process:
    """Start `python -m osvi_async.cli ARGS` with the emulator's token and URL."""
    global _started  # noqa: PLW0603 - numbering the output files of one test run
    _started += 1
    out, err = workdir / f"stdout-{_started}.txt", workdir / f"stderr-{_started}.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "osvi_async.cli",
            *args,
            env=cli_env(emulator),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    _running.append(process)
    return Process(process, out, err)


async def run(emulator: OsviEmulator, workdir: Path, *args: str) -> Process:
    """Run `osvi-async ARGS` to its end."""
    cli = await start(emulator, workdir, *args)
    await cli.wait()
    return cli


async def until(condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Poll `condition` until it holds (the limit only bounds a hang)."""
    ends = time.monotonic() + limit
    while not condition():
        if time.monotonic() > ends:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def report_lines(report: Path) -> list[dict[str, object]]:
    """The report's complete lines."""
    if not report.exists():
        return []
    return [json.loads(raw) for raw in report.read_bytes().split(b"\n")[:-1] if raw]


async def queue_sizes(url: str) -> dict[str, int]:
    """Messages ready in each partition queue and in the dead-letter queue."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        sizes = {}
        for name in [*(partition_queue(i) for i in range(PARTITIONS)), DEAD_LETTER_QUEUE]:
            queue = await channel.declare_queue(name, passive=True)
            sizes[name] = queue.declaration_result.message_count or 0
        return sizes


@pytest.fixture
async def broker(rabbitmq: RabbitMQ) -> AsyncIterator[str]:
    """The private broker's URL, its queues (P = 4) empty before and after the test."""
    await _purge(rabbitmq.url)
    yield rabbitmq.url
    await _purge(rabbitmq.url)


async def _purge(url: str) -> None:
    async with Publisher(url, partitions=PARTITIONS):
        pass  # declares the topology
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in [*(partition_queue(i) for i in range(PARTITIONS)), DEAD_LETTER_QUEUE]:
            queue = await channel.get_queue(name)
            await queue.purge()


def write_jsonl(path: Path, rows: list[dict[str, str]], *, bad_at: int | None = None) -> None:
    """Rows as JSON Lines; with `bad_at`, a line that is not JSON goes in at that index."""
    lines = [json.dumps(row) for row in rows]
    if bad_at is not None:
        lines.insert(bad_at, "{not json")
    path.write_text("\n".join(lines) + "\n")


def session_rows(sessions: list[str], per_session: int, tag: str) -> list[dict[str, str]]:
    """`per_session` rows for each session, interleaved, each context unique."""
    return [
        {"session_id": session_id, "context": f"{tag} {session_id[:8]} {n:03}"}
        for n in range(per_session)
        for session_id in sessions
    ]


def expected(rows: list[dict[str, str]], session_id: str) -> tuple[str, ...]:
    """A session's contexts in input order."""
    return tuple(row["context"] for row in rows if row["session_id"] == session_id)


def free_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def one_line(text: str) -> str:
    """The only line of `text` (asserts there is exactly one, and no traceback)."""
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


async def test_publish_jsonl_then_worker_applies_in_order(
    broker: str, osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """An invalid line is named and not published (exit 1); a worker applies the other 60 rows
    in input order per session; its report has one acked line per message; SIGTERM: 143."""
    sessions = [osvi_emulator.create_session() for _ in range(6)]
    rows = session_rows(sessions, 10, "jsonl")
    source, report = tmp_path / "rows.jsonl", tmp_path / "worker.jsonl"
    write_jsonl(source, rows, bad_at=2)  # line 3

    published = await run(osvi_emulator, tmp_path, "publish", "--broker", broker, *P, str(source))

    assert await published.wait() == 1, published.stderr
    assert "invalid: line 3: not valid JSON" in published.stderr
    assert published.stderr.splitlines()[-1] == (
        "published 60 rows (through line 61), 1 invalid (lines 3: not published)"
    )
    assert published.stdout == ""
    assert (await queue_sizes(broker))[DEAD_LETTER_QUEUE] == 0
    worker = await start(
        osvi_emulator,
        tmp_path,
        "worker",
        "--broker",
        broker,
        *P,
        "--report",
        str(report),
        "--stats-every",
        "0.2",
    )
    await until(lambda: len(report_lines(report)) == 60, "60 report lines")
    await until(lambda: "worker: connected" in worker.stderr, "a counters line")
    worker.process.send_signal(signal.SIGTERM)

    assert await worker.wait() == 143, worker.stderr
    for session_id in sessions:
        assert osvi_emulator.applied(session_id) == expected(rows, session_id)
    lines = report_lines(report)
    assert sorted(str(line["context"]) for line in lines) == sorted(r["context"] for r in rows)
    assert all(line["ok"] is True and line["settled"] == "acked" for line in lines)
    assert all(line["attempts"] == 1 and line["possible_duplicate"] is False for line in lines)
    assert len({line["message_id"] for line in lines}) == 60
    stderr = worker.stderr
    assert "Traceback" not in stderr
    shown = broker.replace(":guest@", ":***@")
    assert f"worker: 4 partitions (osvi.inject.p0 to p3) on {shown}," in stderr
    assert ":guest@" not in stderr
    assert osvi_emulator.api_token not in stderr
    assert "60 applied (0 possible duplicates)" in stderr.splitlines()[-1]
    stopped = [line for line in stderr.splitlines() if line.startswith("stopped by")]
    assert stopped == [stderr.splitlines()[-1]]
    assert stopped[0].startswith("stopped by SIGTERM (after in-flight messages finished): ")


async def test_publish_csv_then_worker_applies_in_order(
    broker: str, osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """CSV rows (quoted commas, a blank session id) are published as bulk reads them; a worker
    applies them in order per session; SIGINT stops it with exit 130."""
    sessions = [osvi_emulator.create_session() for _ in range(3)]
    source, report = tmp_path / "rows.csv", tmp_path / "worker.jsonl"
    with source.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["context", "session_id"])
        for n in range(5):
            for session_id in sessions:
                writer.writerow([f'csv, "{n}"', session_id])
        writer.writerow(["no session", " "])  # line 17

    published = await run(osvi_emulator, tmp_path, "publish", "--broker", broker, *P, str(source))

    assert await published.wait() == 1, published.stderr
    invalid, summary = published.stderr.splitlines()
    assert invalid.startswith("invalid: line 17: session_id must be a session UUID")
    assert summary == "published 15 rows (through line 16), 1 invalid (lines 17: not published)"
    worker = await start(
        osvi_emulator, tmp_path, "worker", "--broker", broker, *P, "--report", str(report)
    )
    await until(lambda: len(report_lines(report)) == 15, "15 report lines")
    worker.process.send_signal(signal.SIGINT)
    assert await worker.wait() == 130, worker.stderr
    assert worker.stderr.splitlines()[-1].startswith("stopped by SIGINT")
    for session_id in sessions:
        assert osvi_emulator.applied(session_id) == tuple(f'csv, "{n}"' for n in range(5))


async def test_customer_rows_are_looked_up_and_applied_in_order(
    broker: str, osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """Rows addressed by customer and agent: the worker looks each pair up once and applies
    every row in order. (Not mixed with rows naming the session: on the broker the two
    addresses are two ordering keys, see docs/workers.md.)"""
    customers = [f"cus_{n}" for n in range(3)]
    sessions = {
        c: osvi_emulator.create_session(agent_uuid="agent_w", customer_id=c) for c in customers
    }
    source, report = tmp_path / "rows.jsonl", tmp_path / "worker.jsonl"
    rows = []
    for n in range(6):
        for customer in customers:
            rows.append(
                {"customer_id": customer, "agent_uuid": "agent_w", "context": f"{customer}-{n}"}
            )
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    published = await run(osvi_emulator, tmp_path, "publish", "--broker", broker, *P, str(source))
    assert await published.wait() == 0, published.stderr
    worker = await start(
        osvi_emulator, tmp_path, "worker", "--broker", broker, *P, "--report", str(report)
    )
    await until(lambda: len(report_lines(report)) == 18, "18 report lines")
    worker.process.send_signal(signal.SIGTERM)
    assert await worker.wait() == 143, worker.stderr
    for customer in customers:
        assert osvi_emulator.applied(sessions[customer]) == tuple(
            f"{customer}-{n}" for n in range(6)
        )
    assert osvi_emulator.requests("active_session") == len(customers)


async def test_sigterm_mid_run_then_a_second_worker_finishes(
    broker: str, osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """SIGTERM while calls are in flight: exit 143 with one summary line; a second worker
    applies the rest: every row applied exactly once, in order per session."""
    sessions = [osvi_emulator.create_session() for _ in range(10)]
    rows = session_rows(sessions, 30, "stop")
    source = tmp_path / "rows.jsonl"
    write_jsonl(source, rows)
    published = await run(osvi_emulator, tmp_path, "publish", "--broker", broker, *P, str(source))
    assert await published.wait() == 0, published.stderr
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=(0.01, 0.03))
    first_report, second_report = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first = await start(
        osvi_emulator,
        tmp_path,
        "worker",
        "--broker",
        broker,
        *P,
        "--report",
        str(first_report),
        "--prefetch",
        "50",
    )
    await until(lambda: len(report_lines(first_report)) >= 40, "40 messages applied")

    first.process.send_signal(signal.SIGTERM)

    assert await first.wait() == 143, first.stderr
    stderr = first.stderr
    assert "Traceback" not in stderr
    summary = [line for line in stderr.splitlines() if line.startswith("stopped by")]
    assert len(summary) == 1
    assert summary[0] == stderr.splitlines()[-1]
    assert "SIGTERM: stopping" in stderr
    done_first = len(report_lines(first_report))
    assert done_first < len(rows)
    second = await start(
        osvi_emulator, tmp_path, "worker", "--broker", broker, *P, "--report", str(second_report)
    )
    await until(
        lambda: done_first + len(report_lines(second_report)) >= len(rows), "the other rows"
    )
    second.process.send_signal(signal.SIGTERM)
    assert await second.wait() == 143, second.stderr
    for session_id in sessions:
        assert osvi_emulator.applied(session_id) == expected(rows, session_id)
    lines = report_lines(first_report) + report_lines(second_report)
    assert all(line["ok"] is True for line in lines)
    assert sorted(str(line["context"]) for line in lines) == sorted(r["context"] for r in rows)


async def test_dead_letters_lists_then_requeues(
    broker: str, osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """A 404'd message is listed with its code and left in place; --requeue publishes it back
    to a partition queue and removes it from the dead letters."""
    session_id = osvi_emulator.create_session()
    source, report = tmp_path / "rows.jsonl", tmp_path / "worker.jsonl"
    write_jsonl(
        source,
        [
            {"session_id": UNKNOWN_SESSION, "context": "to nowhere"},
            {"session_id": session_id, "context": "kept"},
        ],
    )
    published = await run(osvi_emulator, tmp_path, "publish", "--broker", broker, *P, str(source))
    assert await published.wait() == 0, published.stderr
    worker = await start(
        osvi_emulator, tmp_path, "worker", "--broker", broker, *P, "--report", str(report)
    )
    await until(lambda: len(report_lines(report)) == 2, "2 report lines")
    worker.process.send_signal(signal.SIGTERM)
    assert await worker.wait() == 143, worker.stderr
    failed = [line for line in report_lines(report) if line["ok"] is False]
    assert [(line["settled"], line["code"]) for line in failed] == [
        ("dead_lettered", "session_not_found")
    ]

    for _ in range(2):  # listing leaves it in the queue
        listed = await run(osvi_emulator, tmp_path, "dead-letters", "--broker", broker, "--json")
        assert await listed.wait() == 0, listed.stderr
        (letter,) = [json.loads(line) for line in listed.stdout.splitlines()]
        assert letter["session_id"] == UNKNOWN_SESSION
        assert letter["context"] == "to nowhere"
        assert letter["code"] == "session_not_found"
        assert letter["error"] == "NotFoundError"
        assert letter["may_have_been_applied"] is False
        assert letter["requeued_as"] is None
        assert one_line(listed.stderr) == "1 dead letters"
    assert (await queue_sizes(broker))[DEAD_LETTER_QUEUE] == 1

    requeued = await run(
        osvi_emulator, tmp_path, "dead-letters", "--broker", broker, *P, "--requeue"
    )

    assert await requeued.wait() == 0, requeued.stderr
    assert one_line(requeued.stderr) == "1 dead letters; requeued 1, left 0 (not injections)"
    line = one_line(requeued.stdout)
    assert f"session {UNKNOWN_SESSION}: session_not_found: " in line
    assert "requeued as " in line
    sizes = await queue_sizes(broker)
    assert sizes[DEAD_LETTER_QUEUE] == 0
    assert sum(sizes.values()) == 1  # back in its partition queue, for the workers


async def test_dead_letters_lists_what_no_worker_would_take_and_leaves_it(
    broker: str, osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """Dead letters nested past any JSON limit, or with a context over the size limit, are
    listed (the context cut short) and left in the queue: no internal error, exit 1."""
    from osvi_async.worker._topology import DEAD_LETTER_EXCHANGE

    async with Publisher(broker, partitions=PARTITIONS):
        pass  # the topology
    huge = json.dumps({"v": 1, "session_id": UNKNOWN_SESSION, "context": "x" * 2_000_000})
    connection = await aio_pika.connect(broker)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(DEAD_LETTER_EXCHANGE)
        for body in (b"[" * 100_000 + b"]" * 100_000, huge.encode()):
            await exchange.publish(aio_pika.Message(body), routing_key="")

    requeued = await run(
        osvi_emulator, tmp_path, "dead-letters", "--broker", broker, *P, "--requeue"
    )

    assert await requeued.wait() == 1, requeued.stderr
    assert "internal error" not in requeued.stderr
    assert one_line(requeued.stderr).endswith("requeued 0, left 2 (not injections)")
    lines = requeued.stdout.splitlines()
    assert len(lines) == 2
    assert all(len(line) < 5_000 for line in lines)
    assert (await queue_sizes(broker))[DEAD_LETTER_QUEUE] == 2


@pytest.mark.parametrize(
    "command",
    [["publish", "INPUT"], ["worker"], ["dead-letters"]],
    ids=["publish", "worker", "dead-letters"],
)
async def test_unreachable_broker_is_exit_3_one_line(
    osvi_emulator: OsviEmulator, tmp_path: Path, command: list[str]
) -> None:
    """Nothing listens at the broker URL: exit 3, one line naming it without its password."""
    source = tmp_path / "rows.jsonl"
    write_jsonl(source, [{"session_id": UNKNOWN_SESSION, "context": "x"}])
    url = f"amqp://osvi:s3cretpassw0rd@127.0.0.1:{free_port()}/"
    args = [str(source) if word == "INPUT" else word for word in command]

    cli = await run(osvi_emulator, tmp_path, *args, "--broker", url)

    assert await cli.wait() == 3
    line = one_line(cli.stderr)
    assert line.startswith("error: cannot reach the broker at amqp://osvi:***@127.0.0.1:")
    assert "s3cretpassw0rd" not in line
    assert cli.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["publish", "INPUT"], "Missing option '--broker'"),
        (["publish", "--broker", "http://127.0.0.1/", "INPUT"], "must be an amqp://"),
        (["publish", "--broker", "amqp://h/", "--partitions", "0", "INPUT"], "--partitions"),
        (["publish", "--broker", "amqp://h/", "missing.jsonl"], "no such input file"),
        (["worker", "--broker", "amqp://h/", "--token", ""], "no API token"),
        (["worker", "--broker", "amqp://h/", "--grace", "inf"], "--grace"),
        (["dead-letters", "--broker", "amqp://h:99999/"], "not a valid URL"),
    ],
    ids=["no-broker", "scheme", "partitions", "input", "token", "grace", "port"],
)
async def test_usage_errors_are_exit_2_one_line(
    osvi_emulator: OsviEmulator, tmp_path: Path, args: list[str], message: str
) -> None:
    """Bad options or input: exit 2, one line, before any broker is contacted."""
    source = tmp_path / "rows.jsonl"
    write_jsonl(source, [{"session_id": UNKNOWN_SESSION, "context": "x"}])
    words = [str(source) if word == "INPUT" else word for word in args]

    cli = await run(osvi_emulator, tmp_path, *words)

    assert await cli.wait() == 2
    assert message in one_line(cli.stderr)


async def test_partitions_other_than_the_deployments_are_refused(
    broker: str, osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """The broker has 4 partitions: --partitions 16 is exit 2 (it would move sessions), and
    no partition queue is added."""
    source = tmp_path / "rows.jsonl"
    write_jsonl(source, [{"session_id": UNKNOWN_SESSION, "context": "x"}])

    cli = await run(
        osvi_emulator, tmp_path, "publish", "--broker", broker, "--partitions", "16", str(source)
    )

    assert await cli.wait() == 2
    assert "the broker has 4 partition queues" in one_line(cli.stderr)
    assert sum((await queue_sizes(broker)).values()) == 0
    connection = await aio_pika.connect(broker)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.declare_queue(partition_queue(PARTITIONS), passive=True)


async def test_second_signal_stops_the_worker_at_once(
    broker: str, osvi_emulator: OsviEmulator, tmp_path: Path
) -> None:
    """Calls in flight for 60 s and a 60 s grace: a second SIGTERM exits 143 at once, the
    summary says what was cut off, and the broker has the messages back."""
    sessions = [osvi_emulator.create_session() for _ in range(3)]
    source = tmp_path / "rows.jsonl"
    write_jsonl(source, session_rows(sessions, 1, "slow"))
    published = await run(osvi_emulator, tmp_path, "publish", "--broker", broker, *P, str(source))
    assert await published.wait() == 0, published.stderr
    osvi_emulator.fault_plan = FaultPlan(latency=1.0, latency_seconds=(60.0, 60.0))
    worker = await start(
        osvi_emulator,
        tmp_path,
        "worker",
        "--broker",
        broker,
        *P,
        "--grace",
        "60",
        "--stats-every",
        "0.05",
        "--timeout",
        "90",
    )
    await until(lambda: "3 in flight" in worker.stderr, "3 calls in flight")
    worker.process.send_signal(signal.SIGTERM)
    await until(lambda: "SIGTERM: stopping" in worker.stderr, "the first signal's notice")

    worker.process.send_signal(signal.SIGTERM)

    assert await worker.wait(timeout=30) == 143, worker.stderr
    last = worker.stderr.splitlines()[-1]
    assert last.startswith("stopped by SIGTERM (at once): 3 received, 0 applied")
    assert "3 cut off in flight (may have been applied" in last
    assert "Traceback" not in worker.stderr
    ends = time.monotonic() + 30
    while await _ready(broker) != 3:  # the broker notices the closed connection
        assert time.monotonic() < ends, "the 3 messages never came back to their queues"
        await asyncio.sleep(0.05)


async def _ready(url: str) -> int:
    """Messages ready in the partition queues."""
    sizes = await queue_sizes(url)
    return sum(sizes.values()) - sizes[DEAD_LETTER_QUEUE]
