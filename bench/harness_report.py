"""What bench/harness.py prints and plots: medians, ratios paired by repetition, the verdicts.

Every figure is a median over the repetitions that worked; a ratio is a ratio of medians, shown
with the lowest and highest ratio of the two clients' runs paired by repetition (each pair ran
minutes apart at most), which is the run-to-run spread a reader should judge the ratio by.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Final, NamedTuple

Row = dict[str, Any]
BASELINE: Final = "aiohttp"
FIGURES: Final = ("req_per_s", "cpu_us_per_req", "other_cpu_share")


class Target(NamedTuple):
    """`top`'s figure over `bottom`'s, at least (kind "min") or at most ("max") `bound`."""

    name: str
    top: str
    bottom: str
    figure: str
    bound: float
    kind: str


TARGETS: Final = (
    Target("sdk / aiohttp, req/s", "sdk", "aiohttp", "req_per_s", 0.97, "min"),
    Target("sdk / aiohttp, CPU us/req", "sdk", "aiohttp", "cpu_us_per_req", 1.03, "max"),
    Target("sdk_reqwest / pyreqwest, req/s", "sdk_reqwest", "pyreqwest", "req_per_s", 0.9, "min"),
    Target("sdk_reqwest / aiohttp, req/s", "sdk_reqwest", "aiohttp", "req_per_s", 2.2, "min"),
    Target(
        "sdk_uvloop / aiohttp_uvloop, req/s",
        "sdk_uvloop",
        "aiohttp_uvloop",
        "req_per_s",
        1.0,
        "min",
    ),
    Target("sdk_many / sdk, req/s", "sdk_many", "sdk", "req_per_s", 0.97, "min"),
)
"""Issue 12's targets, each judged at every measured concurrency of TARGET_LEVELS."""
TARGET_LEVELS: Final = (64, 512)


def _worked(row: Row) -> bool:
    return "error" not in row


def medians(rows: list[Row]) -> dict[tuple[int, str], dict[str, float | None]]:
    """Median of each figure per (concurrency, client), over the runs that worked."""
    groups: dict[tuple[int, str], list[Row]] = {}
    for row in filter(_worked, rows):
        groups.setdefault((row["concurrency"], row["client"]), []).append(row)
    found: dict[tuple[int, str], dict[str, float | None]] = {}
    for key, group in groups.items():
        entry: dict[str, float | None] = {"runs": len(group)}
        for figure in FIGURES:
            values = [row[figure] for row in group if row.get(figure) is not None]
            entry[figure] = statistics.median(values) if values else None
        found[key] = entry
    return found


def paired(rows: list[Row], top: str, bottom: str, figure: str, level: int) -> list[float]:
    """`top`'s figure over `bottom`'s within each repetition where both worked."""
    by_run = {
        (row["client"], row["repetition"]): row.get(figure)
        for row in filter(_worked, rows)
        if row["concurrency"] == level
    }
    repetitions = sorted({repetition for _, repetition in by_run})
    return [
        round(by_run[(top, rep)] / by_run[(bottom, rep)], 3)  # type: ignore[operator]
        for rep in repetitions
        if by_run.get((top, rep)) and by_run.get((bottom, rep))
    ]


def ratio(rows: list[Row], top: str, bottom: str, figure: str, level: int) -> Row | None:
    """The ratio of medians with its paired spread, or None when either side has no figure."""
    table = medians(rows)
    upper, lower = table.get((level, top)), table.get((level, bottom))
    if not upper or not lower or not upper.get(figure) or not lower.get(figure):
        return None
    return {
        "value": round(upper[figure] / lower[figure], 3),  # type: ignore[operator]
        "per_repetition": paired(rows, top, bottom, figure, level),
    }


def verdicts(rows: list[Row], levels: list[int]) -> list[Row]:
    """Every target at every measured level it applies to, with its ratio and whether it is met."""
    found = []
    for target in TARGETS:
        for level in (level for level in TARGET_LEVELS if level in levels):
            entry: Row = dict(target._asdict(), concurrency=level)
            measured = ratio(rows, target.top, target.bottom, target.figure, level)
            entry["ratio"] = measured
            if measured is not None:
                value = measured["value"]
                entry["met"] = (
                    value >= target.bound if target.kind == "min" else value <= target.bound
                )
            found.append(entry)
    return found


def _spread(found: Row | None) -> str:
    if found is None:
        return ""
    spread = found["per_repetition"]
    span = f" ({min(spread):.2f}-{max(spread):.2f})" if spread else ""
    return f"{found['value']:.2f}{span}"


def _failure(rows: list[Row], level: int, client: str) -> str:
    errors = [
        row["error"] for row in rows if (row["concurrency"], row["client"]) == (level, client)
    ]
    return errors[-1] if errors else "no run"


def table(summary: dict[str, Any]) -> list[str]:
    """The medians per concurrency and client, with ratios to raw aiohttp."""
    rows = summary["measurements"]
    found = medians(rows)
    lines = [
        "| c | client | req/s | vs aiohttp (spread) | CPU us/req | CPU vs aiohttp (spread) "
        "| runs | other load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for level in summary["settings"]["concurrency"]:
        for client in summary["clients"]:
            figures = found.get((level, client))
            if figures is None:
                failure = _failure(rows, level, client).replace("|", "/")
                lines.append(f"| {level} | {client} | failed: {failure} | | | | 0 | |")
                continue
            cpu = figures["cpu_us_per_req"]
            other = figures["other_cpu_share"]
            if client == BASELINE:
                versus, cpu_versus = "1.00", "1.00"
            else:
                versus = _spread(ratio(rows, client, BASELINE, "req_per_s", level))
                cpu_versus = _spread(ratio(rows, client, BASELINE, "cpu_us_per_req", level))
            lines.append(
                f"| {level} | {client} | {figures['req_per_s']:,.0f} | {versus} | "
                f"{'' if cpu is None else f'{cpu:,.1f}'} | {cpu_versus} | "
                f"{figures['runs']:.0f} | {'' if other is None else f'{other:.2f}'} |"
            )
    return lines


def _missing(summary: dict[str, Any], entry: Row) -> str:
    """Why a target has no ratio: which of its clients was not run, or failed, and how."""
    found = medians(summary["measurements"])
    reasons = []
    for client in (entry["top"], entry["bottom"]):
        if (entry["concurrency"], client) in found:
            continue
        if client not in summary["clients"]:
            reasons.append(f"{client} not run")
        else:
            failure = _failure(summary["measurements"], entry["concurrency"], client)
            reasons.append(f"{client} failed ({failure})".replace("|", "/"))
    return "; ".join(reasons) or "no figure"


def verdict_lines(summary: dict[str, Any]) -> list[str]:
    """One line per target and level: the ratio, its spread, met or not."""
    lines = ["| target | c | ratio of medians (spread) | verdict |", "|---|---:|---:|---|"]
    for entry in summary["verdicts"]:
        sign = ">=" if entry["kind"] == "min" else "<="
        if entry["ratio"] is None:
            verdict = f"n/a: {_missing(summary, entry)}"
        else:
            verdict = "met" if entry["met"] else "**NOT met**"
        lines.append(
            f"| {entry['name']} {sign} {entry['bound']:g} | {entry['concurrency']} | "
            f"{_spread(entry['ratio'])} | {verdict} |"
        )
    return lines


def markdown(summary: dict[str, Any]) -> str:
    """The whole report: header, medians table, verdicts, notes."""
    revision = summary["sdk_revision"]
    dirty = " + uncommitted changes" if revision["uncommitted"] else ""
    settings = summary["settings"]
    lines = [
        f"SDK at {revision['commit']}{dirty}. Command: `{summary['command']}`; "
        f"{settings['repeat']} repetitions, {settings['requests']:,} timed requests per run "
        f"({settings['slow_requests']:,} for httpx-based clients), medians; "
        f"run took {summary['duration_seconds'] / 60:.1f} min.",
        "",
        *table(summary),
        "",
        *verdict_lines(summary),
        "",
        "Spread: the lowest and highest ratio of the two clients' runs paired by repetition. "
        "wrk: a C client (1 thread) on the same core, the ceiling of what nginx serves; its CPU "
        "per request is not comparable and left blank. 'other load': cores busy with processes "
        "other than the client, nginx and the driver during the run (from /proc/stat).",
    ]
    aborted = [row for row in summary["measurements"] if row.get("exit")]
    if aborted:
        lines += ["", f"Runs that printed their result, then died ({len(aborted)}; kept):", ""]
        lines += [
            f"- c={row['concurrency']} rep {row['repetition']} {row['client']}: {row['exit']}"
            for row in aborted
        ]
    failures = [row for row in summary["measurements"] if "error" in row]
    if failures:
        lines += ["", f"Failed runs ({len(failures)}; left out of the medians):", ""]
        lines += [
            f"- c={row['concurrency']} rep {row['repetition']} {row['client']}: "
            f"failed: {row['error']}"
            for row in failures
        ]
    if settings["quick"]:
        lines += ["", "QUICK RUN: too few requests and repetitions for verdicts."]
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    """req/s and CPU us/req per client, one bar per concurrency, min-max whiskers; log scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in summary["measurements"] if _worked(row)]
    found = medians(rows)
    clients = [c for c in summary["clients"] if any(key[1] == c for key in found)]
    levels = summary["settings"]["concurrency"]
    width = 0.8 / max(len(levels), 1)
    figure, axes = plt.subplots(2, 1, figsize=(max(8, 0.9 * len(clients) + 2), 8), sharex=True)
    for axis, name, label in (
        (axes[0], "req_per_s", "requests/s"),
        (axes[1], "cpu_us_per_req", "client CPU us/request"),
    ):
        for index, level in enumerate(levels):
            xs, values, low, high = [], [], [], []
            for position, client in enumerate(clients):
                runs = [
                    row[name]
                    for row in rows
                    if (row["concurrency"], row["client"]) == (level, client)
                    and row.get(name) is not None
                ]
                if not runs:
                    continue
                middle = statistics.median(runs)
                xs.append(position + (index - (len(levels) - 1) / 2) * width)
                values.append(middle)
                low.append(middle - min(runs))
                high.append(max(runs) - middle)
            axis.bar(xs, values, width, yerr=[low, high], capsize=2, label=f"c={level}")
        axis.set_yscale("log")
        axis.set_ylabel(f"{label} (median; whiskers: min-max)")
        axis.grid(visible=True, axis="y", which="both", alpha=0.3)
        axis.legend(fontsize="small")
    axes[1].set_xticks(range(len(clients)))
    axes[1].set_xticklabels(clients, rotation=30, ha="right")
    figure.suptitle(
        "inject_context against nginx (canned 200, core 1); each client a fresh process on core 0"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
