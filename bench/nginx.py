"""A low-overhead reference server: nginx answering every inject_context with a canned 200.

nginx (Debian's package) runs one worker from a temporary prefix, on 127.0.0.1 only, so the
client under test, not the server, is what a benchmark measures.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final

# $sid echoes the session id of the request: the SDK refuses a 200 naming another session.
CANNED_BODY: Final = (
    '{"success":true,"data":{"session_id":"$sid",'
    '"context":["Initial context for this chat",'
    '"Earlier voice call: customer wants a refund and prefers WhatsApp follow-up."]}}'
)

_CONFIG: Final = """
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log crit;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location ~ ^/v1/chat/session/(?<sid>[^/]+)/inject_context$ {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
}}
"""


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Nginx:
    """Start with `with Nginx(cpu=0) as server:`; `server.base_url` is its address."""

    def __init__(self, *, cpu: int | None = None) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise SystemExit("nginx is not installed: apt-get install nginx")
        self._binary = binary
        self._cpu = cpu
        self._prefix = Path(tempfile.mkdtemp(prefix="osvi-bench-nginx-"))
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The master process (its worker is its child)."""
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> Nginx:
        config = self._prefix / "nginx.conf"
        config.write_text(_CONFIG.format(prefix=self._prefix, port=self.port, body=CANNED_BODY))
        command = [self._binary, "-p", str(self._prefix), "-c", str(config)]
        if self._cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(self._cpu), *command]
        self._process = subprocess.Popen(command)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.__exit__(None, None, None)
        raise RuntimeError("nginx did not start")

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None
        shutil.rmtree(self._prefix, ignore_errors=True)
