"""A worker process for the chaos tests: `python -m tests.worker._worker_process BROKER API TOKEN
REPORT PARTITIONS`. Applies messages until SIGTERM (graceful stop), writing one JSON line per
settled message to REPORT, unbuffered, so a SIGKILL loses at most the line being written."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from osvi_async import InjectOutcome, InjectRequest, OsviClient, RetryPolicy
from osvi_async.worker import Worker


async def main(broker: str, api: str, token: str, report: str, partitions: int) -> None:
    descriptor = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(outcome: InjectOutcome, message_id: str | None) -> None:
        request = outcome.request
        line = {
            "message_id": message_id,
            "session_id": request.session_id if isinstance(request, InjectRequest) else None,
            "context": request.context if request is not None else None,
            "ok": outcome.ok,
            "possible_duplicate": bool(outcome.result and outcome.result.possible_duplicate),
            "error": type(outcome.error).__name__ if outcome.error else None,
        }
        os.write(descriptor, (json.dumps(line) + "\n").encode())

    retry = RetryPolicy(initial_delay=0.01, max_delay=0.05)
    async with (
        OsviClient(token, base_url=api, timeout=5.0) as client,
        Worker(
            client, broker, partitions=partitions, prefetch=100, retry=retry, on_outcome=write
        ) as worker,
    ):
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, worker.stop)
        print("ready", flush=True)
        await worker.wait()


if __name__ == "__main__":
    broker_url, api_url, api_token, report_path, count = sys.argv[1:6]
    asyncio.run(main(broker_url, api_url, api_token, report_path, int(count)))
