"""The servers a benchmark runs against, each in its own process, optionally pinned to a core.

- `Nginx` (bench/nginx.py): a canned 200, so the client is what costs;
- `Emulator`: the SDK's own emulator (`python -m osvi_async.testing`), a realistic aiohttp
  server that checks the token, looks up sessions and keeps their 5-entry buckets. Sessions must
  exist on it, so it opens `sessions` of them and exposes their ids.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Final

from clients import TOKEN
from nginx import Nginx

__all__ = ["Emulator", "Nginx", "pin", "read_status_kib", "sdk_revision"]

_URL: Final = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


def pin(command: list[str], cpu: int | None) -> list[str]:
    """`command` run on one core with taskset, when taskset exists and a core is given."""
    if cpu is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


def sdk_revision() -> dict[str, object]:
    """The commit the SDK was measured at, and its uncommitted changes (read-only git)."""
    root = Path(__file__).resolve().parents[1]

    def git(*arguments: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(root), *arguments], capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    changed = git("status", "--porcelain", "--", "osvi_async").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": changed}


def read_status_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of a live process, in KiB, from /proc/<pid>/status."""
    figures: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            figures[key] = int(value.split()[0])
    return figures


class Emulator:
    """`with Emulator(cpu=0, sessions=1000) as server:`; `server.base_url`, `server.session_ids`."""

    def __init__(self, *, cpu: int | None = None, sessions: int = 1000) -> None:
        self._cpu = cpu
        self._sessions = sessions
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.session_ids: list[str] = []

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> Emulator:
        command = [sys.executable, "-m", "osvi_async.testing", "--port", "0", "--token", TOKEN]
        self._process = subprocess.Popen(pin(command, self._cpu), stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self._process.stdout.readline()
            if not line:
                break
            if match := _URL.search(line):
                self.base_url = match[1]
                break
        if not self.base_url:
            self.__exit__(None, None, None)
            raise RuntimeError("the emulator did not print its URL")
        self.session_ids = [self._open_session(n) for n in range(self._sessions)]
        return self

    def _open_session(self, n: int) -> str:
        # One customer per session: opening a second session for a (customer, agent) pair
        # closes the first.
        body = json.dumps({"agent_uuid": "bench-agent", "customer_id": f"bench-customer-{n}"})
        request = urllib.request.Request(
            f"{self.base_url}/v1/chat/session",
            data=body.encode(),
            headers={"API-Token": TOKEN, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.load(response)["data"]["id"])

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None
