"""Issue 12's benchmark method: every client against nginx, one fresh process per run, as ratios.

    python bench/harness.py                  # the full run (see bench/README.md for its length)
    python bench/harness.py --quick          # a smoke test: few requests, 2 repetitions
    python bench/harness.py --clients sdk,aiohttp --concurrency 64 --repeat 9

nginx answers every inject_context with a canned 200 on core 1. Each run is a fresh client
process on core 0 (taskset; bench/run_client.py): it sends every call to one session id, warms
up for 2 x concurrency calls, then times `--requests` calls, each answer decoded and checked
(success, the right session), with the process's user+system CPU over the timed part. Within
a repetition every client runs once, the order rotating from one repetition to the next; the
table gives medians, and ratios of medians to raw aiohttp with the spread of ratios paired by
repetition. wrk (C, one thread, core 0) is the ceiling: what nginx serves when the client costs
next to nothing.

A client that fails is reported as "failed: <its last error line>" and the run goes on.
Writes the raw figures to bench/results/harness-<time>.json (and the report to .md), and the
plot to --plot (default docs/performance-harness.png; a --quick run plots only when asked).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any, Final, NamedTuple

import harness_report
from clients import CONTEXT, GENERATED_ENV, TOKEN
from generated import GenerationError, generate
from run import _busy_seconds, _children_cpu, _self_cpu, _tree_cpu_seconds
from servers import Nginx, pin, sdk_revision

BENCH: Final = Path(__file__).resolve().parent
ROOT: Final = BENCH.parent
Row = dict[str, Any]


class Variant(NamedTuple):
    """How to run one named client: a runner of bench/clients.py (or wrk) and its options."""

    runner: str
    flags: tuple[str, ...] = ()
    slow: bool = False
    """httpx-based: warm up for --slow-warmup seconds first and time --slow-requests calls."""
    many_sessions: bool = False
    """Round-robin over 1,000 session ids: inject_many sends one session's entries one at a
    time, in order, so with a single session id it would run at concurrency 1."""


NO_ORJSON: Final = ("--no-orjson",)
UVLOOP: Final = ("--loop", "uvloop")
VARIANTS: Final[dict[str, Variant]] = {
    "aiohttp": Variant("aiohttp"),
    "aiohttp_uvloop": Variant("aiohttp", UVLOOP),
    "sdk": Variant("sdk", NO_ORJSON),
    "sdk_orjson": Variant("sdk"),
    "sdk_uvloop": Variant("sdk", NO_ORJSON + UVLOOP),
    "sdk_many": Variant("sdk_many", NO_ORJSON, many_sessions=True),
    "sdk_many_uvloop": Variant("sdk_many", NO_ORJSON + UVLOOP, many_sessions=True),
    "pyreqwest": Variant("pyreqwest"),
    "sdk_reqwest": Variant("sdk_reqwest", NO_ORJSON),
    "sdk_reqwest_uvloop": Variant("sdk_reqwest", NO_ORJSON + UVLOOP),
    "aiohttp_tenacity": Variant("aiohttp_tenacity"),
    "httpx": Variant("httpx", slow=True),
    "generated": Variant("generated", slow=True),
    "wrk": Variant("wrk"),
}
"""Every client the harness knows. `sdk*` without `_orjson` run as on a default install (orjson
blocked, stdlib json), also on reqwest, whose extra does not bring orjson either."""
DEFAULT_CLIENTS: Final = (
    "aiohttp",
    "aiohttp_uvloop",
    "sdk",
    "sdk_orjson",
    "sdk_uvloop",
    "sdk_many",
    "pyreqwest",
    "sdk_reqwest",
    "sdk_reqwest_uvloop",
    "httpx",
    "generated",
    "wrk",
)
_WRK_RATE: Final = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_BAD: Final = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)")
_RUN_TIMEOUT_SECONDS: Final = 900


def _levels(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _warmups(text: str) -> dict[int, float]:
    pairs = (part.split(":") for part in text.split(",") if part.strip())
    return {int(level): float(seconds) for level, seconds in pairs}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", default=",".join(DEFAULT_CLIENTS), help="%(default)s")
    parser.add_argument("--concurrency", type=_levels, default=[64, 512], help="64,512")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (5)")
    parser.add_argument("--requests", type=int, default=30_000, help="timed calls a run (30000)")
    parser.add_argument(
        "--slow-requests", type=int, default=2_000, help="timed calls of httpx-based clients"
    )
    parser.add_argument(
        "--slow-repeat",
        type=int,
        default=3,
        help="httpx-based clients run in the first N repetitions only (3)",
    )
    parser.add_argument(
        "--slow-warmup",
        type=_warmups,
        default=_warmups("1:0,64:6,512:18"),
        help="least warm-up seconds of httpx-based clients by concurrency (see bench/README.md)",
    )
    parser.add_argument("--wrk-seconds", type=int, default=3, help="length of a wrk run (3)")
    parser.add_argument("--server-cpu", type=int, default=1, help="nginx's core (1)")
    parser.add_argument("--client-cpu", type=int, default=0, help="the clients' core (0)")
    parser.add_argument("--plot", type=Path, default=None, help="docs/performance-harness.png")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 3000 calls, 2 repetitions (httpx-based: 300 calls, no long warm-up, "
        "1 repetition), 1 s wrk runs",
    )
    return parser


# --- one run -------------------------------------------------------------------------------------


def _failure_line(stderr: str) -> str:
    """The most telling line of a failed run's stderr: the exception, if there is one."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


class Setup(NamedTuple):
    """What every run of one harness invocation shares."""

    base_url: str
    session_id: str
    nginx_pid: int
    wrk_script: Path
    args: argparse.Namespace


def _run_client(name: str, concurrency: int, setup: Setup) -> Row:
    variant, args = VARIANTS[name], setup.args
    requests = args.slow_requests if variant.slow else args.requests
    command = [
        sys.executable,
        str(BENCH / "run_client.py"),
        variant.runner,
        setup.base_url,
        str(concurrency),
        "--requests",
        str(requests),
        "--seconds",
        str(_RUN_TIMEOUT_SECONDS),
        "--warmup-calls",
        str(2 * concurrency),
        "--warmup-max",
        str(_RUN_TIMEOUT_SECONDS),
        *variant.flags,
    ]
    if not variant.many_sessions:
        command += ["--session-id", setup.session_id]
    if variant.slow:
        levels = [level for level in args.slow_warmup if level <= concurrency]
        least = args.slow_warmup[max(levels)] if levels else 0.0
        command += ["--warmup-min", str(least)]
    try:
        result = subprocess.run(
            pin(command, args.client_cpu),
            capture_output=True,
            text=True,
            check=False,
            timeout=_RUN_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {_RUN_TIMEOUT_SECONDS} s"}
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    row: Row = {}
    if lines and result.returncode in (0, -signal.SIGABRT, 128 + signal.SIGABRT):
        row = json.loads(lines[-1])
        if result.returncode != 0:
            row["exit"] = "abort at shutdown"
    else:
        row["error"] = _failure_line(result.stderr) + (
            f" (exit {result.returncode})" if result.returncode < 0 else ""
        )
    if result.stderr.strip():
        row["stderr"] = result.stderr.strip()[-2000:]
    return row


def _wrk_script(workdir: Path) -> Path:
    script = workdir / "inject_context.lua"
    body = json.dumps({"context": CONTEXT}, separators=(",", ":"))
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [[{body}]]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["API-Token"] = "{TOKEN}"\n'
    )
    return script


def _run_wrk(concurrency: int, setup: Setup) -> Row:
    args, seconds = setup.args, setup.args.wrk_seconds
    url = f"{setup.base_url}/v1/chat/session/{setup.session_id}/inject_context"
    script = str(setup.wrk_script)
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "-s", script, url]
    try:
        result = subprocess.run(
            pin(command, args.client_cpu),
            capture_output=True,
            text=True,
            check=False,
            timeout=seconds + 60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"wrk: {exc}"}
    rate = _WRK_RATE.search(result.stdout)
    bad = [match[0] for match in _WRK_BAD.finditer(result.stdout)]
    if result.returncode != 0 or rate is None or bad:
        return {"error": "; ".join(bad) or _failure_line(result.stderr or result.stdout)}
    return {"req_per_s": float(rate[1]), "cpu_us_per_req": None, "seconds": seconds}


def _measure(name: str, concurrency: int, setup: Setup) -> Row:
    """One run of one client, with how busy the machine was with anything else meanwhile."""
    nginx = setup.nginx_pid
    before = (_busy_seconds()[0], _children_cpu(), _tree_cpu_seconds(nginx), _self_cpu())
    started = time.perf_counter()
    row = _run_wrk(concurrency, setup) if name == "wrk" else _run_client(name, concurrency, setup)
    wall = time.perf_counter() - started
    after = (_busy_seconds()[0], _children_cpu(), _tree_cpu_seconds(nginx), _self_cpu())
    busy, client_cpu, server_cpu, driver_cpu = (b - a for a, b in zip(before, after, strict=True))
    row["other_cpu_share"] = round(max(0.0, busy - client_cpu - server_cpu - driver_cpu) / wall, 3)
    row["wall_seconds"] = round(wall, 2)
    row.update(client=name, concurrency=concurrency)
    return row


# --- the whole run -------------------------------------------------------------------------------


def _order(clients: list[str], repetition: int, slow_repeat: int) -> list[str]:
    """This repetition's clients, rotated by one per repetition; slow ones only at first."""
    shift = repetition % len(clients)
    rotated = clients[shift:] + clients[:shift]
    return [c for c in rotated if repetition < slow_repeat or not VARIANTS[c].slow]


def _generated(clients: list[str], workdir: Path) -> dict[str, object]:
    if "generated" not in clients:
        return {"skipped": "not requested"}
    try:
        return generate(workdir)
    except GenerationError as exc:
        print(f"NOTE: the generated client is left out: {exc}", file=sys.stderr)
        clients.remove("generated")
        return {"skipped": str(exc)}


def _print_row(row: Row) -> None:
    head = f"c={row['concurrency']:<4} rep {row['repetition']} {row['client']:19}"
    if "error" in row:
        print(f"{head} failed: {row['error']}", flush=True)
        return
    cpu = row.get("cpu_us_per_req")
    cpu_text = "" if cpu is None else f"{cpu:>8.1f} us/req"
    print(
        f"{head} {row['req_per_s']:>9.1f} req/s {cpu_text:>15}  "
        f"({row['wall_seconds']:.1f} s, other load {row['other_cpu_share']:.2f})"
        + (f"  [{row['exit']}]" if row.get("exit") else ""),
        flush=True,
    )


def run(args: argparse.Namespace, clients: list[str]) -> dict[str, Any]:
    """Every client at every level, `args.repeat` times, interleaved; the raw figures."""
    workdir = Path(tempfile.mkdtemp(prefix="osvi-harness-"))
    session_id = str(uuid.uuid4())
    revision = sdk_revision()
    started = time.time()
    load_before = os.getloadavg()
    rows: list[Row] = []
    try:
        generation = _generated(clients, workdir)
        os.environ[GENERATED_ENV] = str(workdir)
        script = _wrk_script(workdir)
        with Nginx(cpu=args.server_cpu) as nginx:
            setup = Setup(nginx.base_url, session_id, nginx.pid, script, args)
            for level in args.concurrency:
                for repetition in range(args.repeat):
                    for name in _order(clients, repetition, args.slow_repeat):
                        row = _measure(name, level, setup)
                        row["repetition"] = repetition
                        rows.append(row)
                        _print_row(row)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "command": " ".join(["python bench/harness.py", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_seconds": round(time.time() - started, 1),
        "sdk_revision": revision,
        "sdk_revision_after": sdk_revision(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "versions": _versions(),
        "settings": {
            key: getattr(args, key)
            for key in (
                "repeat",
                "concurrency",
                "requests",
                "slow_requests",
                "slow_repeat",
                "slow_warmup",
                "wrk_seconds",
                "server_cpu",
                "client_cpu",
                "quick",
            )
        }
        | {"session_id": session_id, "warmup_calls": "2 x concurrency"},
        "generated_client": generation,
        "clients": clients,
        "measurements": rows,
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in (
        "osvi-async",
        "aiohttp",
        "pyreqwest",
        "uvloop",
        "orjson",
        "httpx",
        "openapi-python-client",
    ):
        with suppress(PackageNotFoundError):
            found[name] = version(name)
    for tool, flag in (("nginx", "-v"), ("wrk", "-v")):
        with suppress(OSError):
            done = subprocess.run([tool, flag], capture_output=True, text=True, check=False)
            found[tool] = (done.stdout + done.stderr).strip().splitlines()[0]
    return found


def main() -> None:
    args = _parser().parse_args()
    if args.quick:
        args.requests, args.slow_requests, args.repeat, args.slow_repeat = 3_000, 300, 2, 1
        args.slow_warmup, args.wrk_seconds = {1: 0.0}, 1
    clients = [name.strip() for name in args.clients.split(",") if name.strip()]
    unknown = sorted(set(clients) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown clients {unknown}; known: {', '.join(VARIANTS)}")
    summary = run(args, clients)
    rows = summary["measurements"]
    summary["medians"] = [
        {"concurrency": level, "client": client, **figures}
        for (level, client), figures in harness_report.medians(rows).items()
    ]
    summary["verdicts"] = harness_report.verdicts(rows, args.concurrency)
    text = harness_report.markdown(summary)
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = args.results / f"harness-{stamp}.json"
    json_path.write_text(json.dumps(summary, indent=1, default=str))
    (args.results / f"harness-{stamp}.md").write_text(text + "\n")
    plot = args.plot
    if plot is None and not args.quick:
        plot = ROOT / "docs" / "performance-harness.png"
    if plot is not None and not args.no_plot:
        harness_report.plot(summary, plot)
    print()
    print(text)
    print(f"\nraw results: {json_path}" + (f"; plot: {plot}" if plot and not args.no_plot else ""))


if __name__ == "__main__":
    main()
