"""The throughput benchmark: every client against nginx and the emulator, interleaved, as ratios.

    python bench/run.py                 # the full run (about 10 minutes on 2 cores)
    python bench/run.py --quick         # a smoke test of the setup (about a minute); no verdicts

For each server (nginx with a canned answer, then the SDK's emulator), each concurrency level and
each repetition, every client runs once in a fresh process (bench/run_client.py): the order of
clients rotates per repetition (A B C, B C A, ...), so slow drifts of the machine hit every
client alike. The server is pinned to core 0 and the client to core 1 with taskset.

Prints the medians as a markdown table, and the ratios the targets are about; writes every raw
measurement to bench/results/run-<time>.json (and the tables to .md), and plots req/s against
concurrency to docs/performance.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, NamedTuple

from clients import CLIENTS, GENERATED_ENV
from generated import GenerationError, generate
from servers import Emulator, Nginx, pin, sdk_revision

BENCH: Final = Path(__file__).resolve().parent
ROOT: Final = BENCH.parent
SLOW_CLIENTS: Final = ("httpx", "generated")
"""httpx-based: their pool runs ~4x faster once httpx's 5 s keep-alive expiry has passed, and
at high concurrency they take ~15 s to get there; they warm up for longer (see --slow-warmup)."""

Row = dict[str, Any]


class Target(NamedTuple):
    """One target: `top`'s figure over `bottom`'s at one concurrency, at least or at most."""

    name: str
    top: str
    bottom: str
    figure: str
    concurrency: int
    bound: float
    kind: str  # "min": the ratio must be >= bound; "max": <= bound


TARGETS: Final = [
    Target(
        "SDK inject_context / raw aiohttp, req/s, c=64",
        "sdk",
        "aiohttp",
        "req_per_s",
        64,
        1.10,
        "min",
    ),
    Target(
        "SDK inject_context / raw aiohttp, req/s, c=512",
        "sdk",
        "aiohttp",
        "req_per_s",
        512,
        1.10,
        "min",
    ),
    Target(
        "SDK inject_context / raw aiohttp, CPU/request, c=64",
        "sdk",
        "aiohttp",
        "cpu_us_per_req",
        64,
        0.90,
        "max",
    ),
    Target(
        "SDK inject_context / generated client, req/s, c=64",
        "sdk",
        "generated",
        "req_per_s",
        64,
        15.0,
        "min",
    ),
    Target(
        "SDK inject_many / SDK inject_context, req/s, c=1",
        "sdk_many",
        "sdk",
        "req_per_s",
        1,
        0.95,
        "min",
    ),
    Target(
        "SDK inject_many / SDK inject_context, req/s, c=64",
        "sdk_many",
        "sdk",
        "req_per_s",
        64,
        0.95,
        "min",
    ),
    Target(
        "SDK inject_many / SDK inject_context, req/s, c=512",
        "sdk_many",
        "sdk",
        "req_per_s",
        512,
        0.95,
        "min",
    ),
]


def _levels(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _warmups(text: str) -> dict[int, float]:
    pairs = (part.split(":") for part in text.split(",") if part.strip())
    return {int(level): float(seconds) for level, seconds in pairs}


def _cpu(text: str) -> int | None:
    return None if text == "none" else int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--concurrency", type=_levels, default=[1, 64, 512], help="1,64,512")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="%(default)s")
    parser.add_argument("--servers", default="nginx,emulator", help="%(default)s")
    parser.add_argument("--seconds", type=float, default=2.0, help="measured window (2.0)")
    parser.add_argument(
        "--slow-warmup",
        type=_warmups,
        default=_warmups("1:0,64:6,512:18"),
        help="least warm-up seconds of httpx-based clients, by concurrency "
        "(1:0,64:6,512:18: the largest level <= C applies)",
    )
    parser.add_argument("--server-cpu", type=_cpu, default=0, help="core for servers, or none")
    parser.add_argument("--client-cpu", type=_cpu, default=1, help="core for clients, or none")
    parser.add_argument("--sessions", type=int, default=1000, help="session ids in the pool")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "performance.png")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    parser.add_argument(
        "--quick", action="store_true", help="1 repetition, 0.5 s windows, short warm-ups"
    )
    return parser


# --- CPU accounting: how much of the machine something other than this benchmark used -------

_TICK: Final = os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> tuple[float, float]:
    """CPU time all cores ran processes (user, nice, system), and time stolen by the host.

    Interrupt and softirq time are left out: loopback networking lands there, and it is this
    benchmark's own traffic.
    """
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    user, nice, system, steal = fields[0], fields[1], fields[2], fields[7]
    return (user + nice + system) / _TICK, steal / _TICK


def _tree_cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and its descendants, from /proc."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
    return total


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- running -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _server(name: str, cpu: int | None, sessions: int) -> Iterator[tuple[str, int, list[str]]]:
    """(base_url, pid, session ids) of a running server."""
    if name == "nginx":
        with Nginx(cpu=cpu) as server:
            yield server.base_url, server.pid, []
    elif name == "emulator":
        with Emulator(cpu=cpu, sessions=sessions) as server:
            yield server.base_url, server.pid, server.session_ids
    else:
        raise SystemExit(f"unknown server {name!r}: nginx or emulator")


def _slow_warmup(table: dict[int, float], concurrency: int) -> float:
    levels = [level for level in table if level <= concurrency]
    return table[max(levels)] if levels else 0.0


def _measure(  # noqa: PLR0917
    client: str,
    base_url: str,
    concurrency: int,
    ids_file: Path | None,
    server_pid: int,
    args: argparse.Namespace,
    env: dict[str, str],
) -> Row:
    command = [
        sys.executable,
        str(BENCH / "run_client.py"),
        client,
        base_url,
        str(concurrency),
        "--seconds",
        str(args.seconds),
    ]
    if ids_file is not None:
        command += ["--ids", str(ids_file)]
    if args.quick:
        command += ["--warmup-max", "0.5"]
    if client in SLOW_CLIENTS:
        command += ["--warmup-min", str(_slow_warmup(args.slow_warmup, concurrency))]
    before = (_busy_seconds(), _children_cpu(), _tree_cpu_seconds(server_pid), _self_cpu())
    started = time.perf_counter()
    result = subprocess.run(
        pin(command, args.client_cpu), capture_output=True, text=True, env=env, check=False
    )
    wall = time.perf_counter() - started
    after = (_busy_seconds(), _children_cpu(), _tree_cpu_seconds(server_pid), _self_cpu())
    if result.returncode != 0:
        # Recorded and shown, not fatal: one client failing must not lose the others' figures.
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"FAILED: {client} at c={concurrency}: {last}", file=sys.stderr, flush=True)
        row = {"client": client, "concurrency": concurrency, "error": last}
        row |= {"stderr": result.stderr[-4000:]}
        return row
    row = json.loads(result.stdout.strip().splitlines()[-1])
    (busy, steal), (busy_after, steal_after) = before[0], after[0]
    client_cpu, server_cpu, driver_cpu = (b - a for a, b in zip(before[1:], after[1:], strict=True))
    other = busy_after - busy - client_cpu - server_cpu - driver_cpu
    row["server_cpu_share"] = round(server_cpu / wall, 3)
    row["other_cpu_share"] = round(max(0.0, other) / wall, 3)
    row["steal_share"] = round((steal_after - steal) / wall, 3)
    if result.stderr.strip():
        row["stderr"] = result.stderr.strip()[-2000:]
    return row


def _generate_client(clients: list[str], workdir: Path) -> dict[str, object]:
    if "generated" not in clients:
        return {"skipped": "not requested"}
    try:
        notes = generate(workdir)
    except GenerationError as exc:
        print(f"NOTE: skipping the generated client: {exc}", file=sys.stderr)
        clients.remove("generated")
        return {"skipped": str(exc)}
    if notes["patched"]:
        print(
            "NOTE: openapi-python-client rejected the spec as is; it ran on a temporary copy "
            "with `nullable: true` rewritten to the OpenAPI 3.1 form",
            file=sys.stderr,
        )
    return notes


def run(args: argparse.Namespace) -> dict[str, Any]:
    clients = [name.strip() for name in args.clients.split(",") if name.strip()]
    unknown = set(clients) - set(CLIENTS)
    if unknown:
        raise SystemExit(f"unknown clients: {sorted(unknown)}")
    workdir = Path(tempfile.mkdtemp(prefix="osvi-bench-"))
    rows: list[Row] = []
    revision = sdk_revision()
    started = time.time()
    load_before = os.getloadavg()
    try:
        generation = _generate_client(clients, workdir)
        env = dict(os.environ, **{GENERATED_ENV: str(workdir)})
        for server_name in [name.strip() for name in args.servers.split(",") if name.strip()]:
            with _server(server_name, args.server_cpu, args.sessions) as (url, pid, ids):
                ids_file = None
                if ids:
                    ids_file = workdir / f"{server_name}-ids.txt"
                    ids_file.write_text("\n".join(ids))
                for concurrency in args.concurrency:
                    for repetition in range(args.repeat):
                        shift = repetition % len(clients)
                        for client in clients[shift:] + clients[:shift]:
                            row = _measure(client, url, concurrency, ids_file, pid, args, env)
                            row.update(server=server_name, repetition=repetition)
                            rows.append(row)
                            if "error" in row:
                                continue
                            print(
                                f"{server_name:8} c={concurrency:<4} rep {repetition} "
                                f"{client:17} {row['req_per_s']:>9.1f} req/s "
                                f"{row['cpu_us_per_req']:>9.1f} us/req {row['rss_mb']:>6.1f} MB"
                                f"  (other load {row['other_cpu_share']:.2f} cores)",
                                flush=True,
                            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "command": " ".join(["python bench/run.py", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_seconds": round(time.time() - started, 1),
        "sdk_revision": revision,
        "sdk_revision_after": sdk_revision(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "taskset": shutil.which("taskset") is not None,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "versions": _versions(),
        "settings": {
            "repeat": args.repeat,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "slow_warmup": args.slow_warmup,
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
            "quick": args.quick,
        },
        "generated_client": generation,
        "clients": clients,
        "measurements": rows,
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("osvi-async", "aiohttp", "httpx", "tenacity", "orjson", "openapi-python-client"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
    found["nginx"] = nginx.stderr.strip().rpartition("/")[2]
    return found


# --- summarising -------------------------------------------------------------------------------


def medians(rows: list[Row]) -> dict[tuple[str, int, str], dict[str, float]]:
    """Median of each figure per (server, concurrency, client), over the runs that worked."""
    groups: dict[tuple[str, int, str], list[Row]] = {}
    for row in rows:
        if "error" not in row:
            groups.setdefault((row["server"], row["concurrency"], row["client"]), []).append(row)
    return {
        key: {
            figure: statistics.median(row[figure] for row in group)
            for figure in ("req_per_s", "cpu_us_per_req", "rss_mb", "other_cpu_share")
        }
        | {"repetitions": len(group)}
        for key, group in groups.items()
    }


def ratios(rows: list[Row], servers: list[str]) -> list[Row]:
    """Each target's ratio of medians per server, with the ratios of runs paired by repetition."""
    table = medians(rows)
    found = []
    for target in TARGETS:
        entry: Row = {"ratio": target.name, "target": target.bound, "kind": target.kind}
        for server in servers:
            top = table.get((server, target.concurrency, target.top))
            bottom = table.get((server, target.concurrency, target.bottom))
            if top is None or bottom is None or not bottom[target.figure]:
                entry[server] = None
                continue
            value = top[target.figure] / bottom[target.figure]
            entry[server] = {
                "value": round(value, 3),
                "per_repetition": _paired(rows, server, target),
                "met": value >= target.bound if target.kind == "min" else value <= target.bound,
            }
        found.append(entry)
    return found


def _paired(rows: list[Row], server: str, target: Target) -> list[float]:
    """The target's ratio within each repetition (the two runs were minutes apart at most)."""
    figures: dict[tuple[str, int], float] = {
        (row["client"], row["repetition"]): row[target.figure]
        for row in rows
        if row["server"] == server
        and row["concurrency"] == target.concurrency
        and "error" not in row
    }
    repetitions = sorted({repetition for _, repetition in figures})
    return [
        round(figures[(target.top, rep)] / figures[(target.bottom, rep)], 3)
        for rep in repetitions
        if figures.get((target.top, rep)) and figures.get((target.bottom, rep))
    ]


def markdown(summary: dict[str, Any]) -> str:
    rows = summary["measurements"]
    servers = list(dict.fromkeys(row["server"] for row in rows))
    table = medians(rows)
    levels = summary["settings"]["concurrency"]
    revision = summary["sdk_revision"]
    dirty = " + uncommitted changes" if revision["uncommitted"] else ""
    lines = [
        f"SDK at {revision['commit']}{dirty}. "
        f"Command: `{summary['command']}`; {summary['settings']['repeat']} repetitions, "
        f"medians; {summary['settings']['seconds']} s windows; "
        f"run took {summary['duration_seconds'] / 60:.1f} min.",
        "",
    ]
    for server in servers:
        lines += [
            f"**{server}**",
            "",
            "| c | client | req/s | vs aiohttp | client CPU us/req | peak RSS MB | other load |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        for level in levels:
            base = table.get((server, level, "aiohttp"))
            for client in summary["clients"]:
                figures = table.get((server, level, client))
                if figures is None:
                    continue
                versus = (
                    f"{figures['req_per_s'] / base['req_per_s']:.2f}x"
                    if base and base["req_per_s"]
                    else "n/a"
                )
                lines.append(
                    f"| {level} | {client} | {figures['req_per_s']:,.0f} | {versus} | "
                    f"{figures['cpu_us_per_req']:,.1f} | {figures['rss_mb']:.1f} | "
                    f"{figures['other_cpu_share']:.2f} |"
                )
        lines.append("")
    lines += [
        "| ratio (medians) | target | " + " | ".join(servers) + " |",
        "|---|---:|" + "---|" * len(servers),
    ]
    for entry in ratios(rows, servers):
        sign = ">=" if entry["kind"] == "min" else "<="
        cells = []
        for server in servers:
            found = entry[server]
            if found is None:
                cells.append("n/a")
                continue
            spread = found["per_repetition"]
            span = f" ({min(spread):.2f}-{max(spread):.2f})" if spread else ""
            verdict = "met" if found["met"] else "NOT met"
            cells.append(f"{found['value']:.3f}{span} {verdict}")
        lines.append(
            f"| {entry['ratio']} | {sign} {entry['target']:g} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "In brackets: the lowest and highest ratio of the clients' runs paired by repetition. "
        "'other load': cores busy running processes other than the client, the server and the "
        "driver (from /proc/stat; interrupts and softirq left out), averaged over each "
        "measurement.",
    ]
    failures = [row for row in rows if "error" in row]
    if failures:
        lines += ["", f"Failed runs ({len(failures)}; left out of the medians):", ""]
        lines += [
            f"- {row['server']} c={row['concurrency']} rep {row['repetition']} {row['client']}: "
            f"{row['error']}"
            for row in failures
        ]
    if summary["settings"]["quick"]:
        lines += ["", "QUICK RUN: windows too short for verdicts; use the full run."]
    return "\n".join(lines)


def _all_runs(rows: list[Row], server: str, level: int, client: str) -> list[float]:
    return [
        row["req_per_s"]
        for row in rows
        if (row["server"], row["concurrency"], row["client"]) == (server, level, client)
        and "error" not in row
    ]


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["measurements"]
    servers = list(dict.fromkeys(row["server"] for row in rows))
    table = medians(rows)
    figure, axes = plt.subplots(
        1, len(servers), figsize=(6 * len(servers), 4.5), sharey=True, squeeze=False
    )
    for axis, server in zip(axes[0], servers, strict=True):
        for client in summary["clients"]:
            points = [
                (level, table[(server, level, client)]["req_per_s"])
                for level in summary["settings"]["concurrency"]
                if (server, level, client) in table
            ]
            spread = [_all_runs(rows, server, level, client) for level, _ in points]
            levels = [level for level, _ in points]
            values = [value for _, value in points]
            errors = [
                [value - min(s) for value, s in zip(values, spread, strict=True)],
                [max(s) - value for value, s in zip(values, spread, strict=True)],
            ]
            axis.errorbar(levels, values, yerr=errors, marker="o", capsize=3, label=client)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xticks(summary["settings"]["concurrency"])
        axis.set_xticklabels([str(level) for level in summary["settings"]["concurrency"]])
        axis.set_title(f"against {server}")
        axis.set_xlabel("concurrency (requests in flight)")
        axis.grid(visible=True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("requests/s (median; bars: min-max)")
    axes[0][-1].legend(fontsize="small")
    figure.suptitle("inject_context throughput, one client process on one core (log-log)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    args = _parser().parse_args()
    if args.quick:
        args.repeat, args.seconds = 1, 0.5
        args.slow_warmup = {1: 0.0}
    summary = run(args)
    servers = list(dict.fromkeys(row["server"] for row in summary["measurements"]))
    summary["medians"] = [
        {"server": s, "concurrency": c, "client": n, **figures}
        for (s, c, n), figures in medians(summary["measurements"]).items()
    ]
    summary["ratios"] = ratios(summary["measurements"], servers)
    text = markdown(summary)
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = args.results / f"run-{stamp}.json"
    json_path.write_text(json.dumps(summary, indent=1, default=str))
    (args.results / f"run-{stamp}.md").write_text(text + "\n")
    if not args.no_plot:
        plot(summary, args.plot)
    print()
    print(text)
    print(f"\nraw results: {json_path}" + ("" if args.no_plot else f"; plot: {args.plot}"))


if __name__ == "__main__":
    main()
