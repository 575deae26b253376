"""Tables, verdicts and the plot of bench/adaptive.py, from its rows (no measuring here).

A row is one run: `client` (bench/adaptive_client.py's JSON: phases, per-second successes,
limit samples) and `server` (bench/adaptive_server.py's: the capacity model's per-second
timeline of served and refused requests). With several repetitions every figure is the median
over them.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

Row = dict[str, Any]

GOODPUT_RATIO: Final = 0.9
REFUSED_LIMIT: Final = 0.01
P99_RATIO: Final = 2.0
RECOVERY_SECONDS: Final = 10.0


# --- figures of one run --------------------------------------------------------------------------


def _timeline(row: Row) -> list[dict[str, int]]:
    timeline: list[dict[str, int]] = row["server"]["capacity_stats"]["timeline"]
    return timeline


def refused_share(row: Row, start: float, end: float | None = None) -> float:
    """Refused / all requests the server saw in whole seconds [start, end) (end: run's end)."""
    end = row["client"]["seconds"] if end is None else end
    served = refused = 0
    for second in _timeline(row):
        if start <= second["second"] < end:
            served += second["served"]
            refused += second["refused"]
    total = served + refused
    return refused / total if total else 0.0


def recovery_seconds(row: Row, halve_at: float, restore_at: float) -> float | None:
    """Seconds from the halving until refusals stay under 1% per second up to the restore.

    0 when no second after the halving reached 1%; None when the last second before the restore
    was still at 1% or more.
    """
    shares = {
        second["second"]: second["refused"] / max(1, second["served"] + second["refused"])
        for second in _timeline(row)
    }
    seconds = range(int(halve_at), int(restore_at))
    bad = [second for second in seconds if shares.get(second, 0.0) >= REFUSED_LIMIT]
    if not bad:
        return 0.0
    if bad[-1] == seconds[-1]:
        return None
    return float(bad[-1] + 1 - halve_at)


def limits(row: Row, start: float, end: float) -> list[int]:
    """The live limits sampled within [start, end) (auto runs; fixed runs sample their own)."""
    return [
        limit
        for at, limit, *_ in row["client"]["samples"]
        if start <= at < end and limit is not None
    ]


def _steady(row: Row) -> dict[str, Any]:
    phase: dict[str, Any] = row["client"]["phases"][-1]
    return phase


def _figures(row: Row) -> dict[str, Any]:
    steady = _steady(row)
    sampled = limits(row, steady["start"], steady["end"])
    return {
        "goodput": row["client"]["goodput"],
        "steady_goodput": steady["goodput"],
        "refused_pct": 100 * refused_share(row, steady["start"]),
        "p50_ms": steady["p50_ms"],
        "p99_ms": steady["p99_ms"],
        "retried_pct": 100 * steady["retried"] / max(1, steady["succeeded"]),
        "limit_median": statistics.median(sampled) if sampled else None,
        "limit_min": min(sampled) if sampled else None,
        "limit_max": max(sampled) if sampled else None,
        "server_cpu": row["server"]["cpu_share"],
        "client_cpu": row["client"]["cpu_share"],
    }


def _median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _medians(rows: list[Row], figure: Callable[[Row], dict[str, Any]]) -> dict[str, Any]:
    each = [figure(row) for row in rows]
    return {key: _median([one[key] for one in each]) for key in each[0]} | {"runs": len(rows)}


# --- the report ----------------------------------------------------------------------------------


def _worked(row: Row) -> bool:
    return "failed" not in row


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _sweep(summary: dict[str, Any]) -> dict[str, Any]:
    settings = summary["settings"]
    rows = [row for row in summary["rows"] if row["scenario"] == "sweep"]
    per_capacity: dict[str, Any] = {}
    for capacity in settings["capacities"]:
        table: dict[str, Any] = {}
        for concurrency in [*settings["fixed"], "auto"]:
            runs = [
                row
                for row in rows
                if row["capacity"] == capacity and row["concurrency"] == concurrency
            ]
            worked = [row for row in runs if _worked(row)]
            if worked:
                table[str(concurrency)] = _medians(worked, _figures)
            elif runs:
                table[str(concurrency)] = {"failed": runs[-1]["failed"]}
        fixed = {
            key: value for key, value in table.items() if key != "auto" and "failed" not in value
        }
        best = max(fixed, key=lambda key: fixed[key]["steady_goodput"]) if fixed else None
        per_capacity[str(capacity)] = {"table": table, "best_fixed": best}
        auto = table.get("auto", {})
        if best is None or "failed" in auto or not auto:
            per_capacity[str(capacity)]["verdicts"] = {}
            continue
        reference = fixed[best]
        ratio = auto["steady_goodput"] / max(reference["steady_goodput"], 1e-9)
        p99_ratio = (
            auto["p99_ms"] / reference["p99_ms"]
            if auto["p99_ms"] is not None and reference["p99_ms"]
            else None
        )
        per_capacity[str(capacity)]["verdicts"] = {
            "goodput": {"ratio": ratio, "met": ratio >= GOODPUT_RATIO},
            "refused": {
                "pct": auto["refused_pct"],
                "met": auto["refused_pct"] <= 100 * REFUSED_LIMIT,
            },
            "p99": {"ratio": p99_ratio, "met": p99_ratio is not None and p99_ratio <= P99_RATIO},
        }
    return per_capacity


def _halving(summary: dict[str, Any]) -> dict[str, Any]:
    settings = summary["settings"]
    halve_at, restore_at = settings["halve_at"], settings["restore_at"]
    rows = [row for row in summary["rows"] if row["scenario"] == "halving" and _worked(row)]
    found: dict[str, Any] = {}
    for concurrency in ("auto", settings["halving_capacity"]):
        runs = [row for row in rows if row["concurrency"] == concurrency]
        if not runs:
            continue

        def figure(row: Row) -> dict[str, Any]:
            phases = row["client"]["phases"]
            out: dict[str, Any] = {"recovery_s": recovery_seconds(row, halve_at, restore_at)}
            for index, phase in enumerate(phases):
                out[f"goodput_{index}"] = phase["goodput"]
                out[f"p99_{index}"] = phase["p99_ms"]
                out[f"refused_{index}"] = 100 * refused_share(row, phase["start"], phase["end"])
                sampled = limits(row, phase["start"], phase["end"])
                out[f"limit_{index}"] = statistics.median(sampled) if sampled else None
            return out

        medians = _medians(runs, figure)
        recoveries = [figure(row)["recovery_s"] for row in runs]
        # A run that never recovered counts as failing, whatever the median of the others.
        medians["recovered_all"] = all(value is not None for value in recoveries)
        found[str(concurrency)] = medians
    auto = found.get("auto")
    verdicts = {}
    if auto is not None:
        value = auto["recovery_s"]
        met = auto["recovered_all"] and value is not None and value <= RECOVERY_SECONDS
        verdicts["recovery"] = {"seconds": value, "met": met}
    return {"runs": found, "verdicts": verdicts}


def _met(verdict: dict[str, Any]) -> str:
    return "met" if verdict["met"] else "NOT met"


def _sweep_text(settings: dict[str, Any], sweep: dict[str, Any]) -> list[str]:
    start = settings["steady_from"]
    lines = [
        f"| N | concurrency | goodput/s, whole run | goodput/s, after {start:g} s "
        f"| refused % after {start:g} s | p50 ms | p99 ms | retried % "
        "| live limit: median (min-max) | CPU server / client |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for capacity, entry in sweep.items():
        for concurrency, row in entry["table"].items():
            label = concurrency
            if concurrency == entry["best_fixed"]:
                label += " (best fixed)"
            if concurrency == "64":
                label += " (default)"
            if "failed" in row:
                lines.append(f"| {capacity} | {label} | failed: {row['failed']} ||||||||")
                continue
            limit = "-"
            if concurrency == "auto" and row["limit_median"] is not None:
                limit = f"{row['limit_median']:g} ({row['limit_min']:g}-{row['limit_max']:g})"
            lines.append(
                f"| {capacity} | {label} | {_number(row['goodput'])} "
                f"| {_number(row['steady_goodput'])} | {_number(row['refused_pct'], 2)} "
                f"| {_number(row['p50_ms'])} | {_number(row['p99_ms'])} "
                f"| {_number(row['retried_pct'])} | {limit} "
                f"| {_number(row['server_cpu'], 2)} / {_number(row['client_cpu'], 2)} |"
            )
    lines.append("")
    for capacity, entry in sweep.items():
        verdicts = entry["verdicts"]
        if not verdicts:
            lines.append(f"- N={capacity}: no verdict (a run failed)")
            continue
        goodput, refused, p99 = verdicts["goodput"], verdicts["refused"], verdicts["p99"]
        lines.append(
            f"- N={capacity}: auto goodput {goodput['ratio']:.2f}x best fixed "
            f"({entry['best_fixed']}) (target >= {GOODPUT_RATIO}): {_met(goodput)}; "
            f"refused {refused['pct']:.2f}% (target <= {100 * REFUSED_LIMIT:g}%): {_met(refused)}; "
            f"p99 {_number(p99['ratio'], 2)}x best fixed's (target <= {P99_RATIO:g}x): {_met(p99)}"
        )
    return lines


def _halving_text(settings: dict[str, Any], halving: dict[str, Any]) -> list[str]:
    high = settings["halving_capacity"]
    bounds = [0, settings["steady_from"], settings["halve_at"], settings["restore_at"]]
    bounds.append(settings["halving_seconds"])
    names = [f"{a:g}-{b:g} s" for a, b in itertools.pairwise(bounds[1:])]
    capacities = [high, high // 2, high]
    lines = [
        "",
        f"Capacity halves: N={high} -> {high // 2} at {settings['halve_at']:g} s, back to {high} "
        f"at {settings['restore_at']:g} s (queue limit {settings['halving_queue_limit']})",
        "",
        "| concurrency | phase | N | goodput/s | refused % | p99 ms | live limit (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for concurrency, row in halving["runs"].items():
        for index, name in enumerate(names, start=1):
            limit = row.get(f"limit_{index}")
            lines.append(
                f"| {concurrency} | {name} | {capacities[index - 1]} "
                f"| {_number(row.get(f'goodput_{index}'))} "
                f"| {_number(row.get(f'refused_{index}'), 2)} | {_number(row.get(f'p99_{index}'))} "
                f"| {'-' if limit is None else f'{limit:g}'} |"
            )
    lines.append("")
    for concurrency, row in halving["runs"].items():
        value = row["recovery_s"]
        said = (
            "never, within the phase"
            if value is None or not row["recovered_all"]
            else f"{value:g} s"
        )
        lines.append(
            f"- c={concurrency}: refusals back under 1% per second after the halving: {said}"
        )
    verdict = halving["verdicts"].get("recovery")
    if verdict is not None:
        lines.append(f"- target: auto within {RECOVERY_SECONDS:g} s: {_met(verdict)}")
    return lines


def report(summary: dict[str, Any]) -> dict[str, Any]:
    """Medians, verdicts and the markdown text of a finished benchmark."""
    settings = summary["settings"]
    sweep = _sweep(summary)
    found: dict[str, Any] = {"sweep": sweep}
    lines = _sweep_text(settings, sweep)
    if not settings["no_halving"]:
        halving = _halving(summary)
        found["halving"] = halving
        lines += _halving_text(settings, halving)
    found["text"] = "\n".join(lines)
    return found


# --- the plot ------------------------------------------------------------------------------------


def plot(summary: dict[str, Any], path: Path) -> None:
    """Goodput vs fixed concurrency per N with auto's point; auto's limit when capacity halves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings, found = summary["settings"], summary["report"]
    sweep = found["sweep"]
    columns = max(len(sweep), 2)
    figure, axes = plt.subplots(2, columns, figsize=(4.2 * columns, 8.2))
    for axis, (capacity, entry) in zip(axes[0], sweep.items(), strict=False):
        table = entry["table"]
        fixed = [
            (int(key), value["steady_goodput"])
            for key, value in table.items()
            if key != "auto" and "failed" not in value
        ]
        axis.plot(*zip(*fixed, strict=True), "o-", color="tab:blue", label="fixed concurrency")
        ceiling = int(capacity) / settings["service_time"]
        axis.axhline(
            ceiling, color="grey", linestyle=":", label=f"N / service time = {ceiling:g}/s"
        )
        auto = table.get("auto")
        if auto and "failed" not in auto and auto["limit_median"] is not None:
            axis.axhline(auto["steady_goodput"], color="tab:red", linestyle="--", linewidth=1)
            axis.plot(
                [auto["limit_median"]],
                [auto["steady_goodput"]],
                "*",
                markersize=14,
                color="tab:red",
                label=f"auto (at its median limit {auto['limit_median']:g})",
            )
        axis.set_xscale("log", base=2)
        axis.set_title(f"capacity N = {capacity}")
        axis.set_xlabel("concurrency")
        axis.set_ylabel(f"goodput, items/s (after {settings['steady_from']:g} s)")
        axis.set_ylim(bottom=0)
        axis.legend(fontsize=7, loc="lower right")
    for axis in axes[0][len(sweep) :]:
        axis.set_visible(False)
    _plot_halving(summary, axes[1][0], axes[1][1])
    for axis in axes[1][2:]:
        _plot_sweep_limits(summary, axis)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _capacity_steps(settings: dict[str, Any], end: float) -> tuple[list[float], list[int]]:
    high = settings["halving_capacity"]
    times = [0.0, settings["halve_at"], settings["restore_at"], end]
    return times, [high, high // 2, high, high]


def _plot_halving(summary: dict[str, Any], limit_axis: Any, goodput_axis: Any) -> None:
    settings = summary["settings"]
    rows = [
        row
        for row in summary["rows"]
        if row["scenario"] == "halving" and _worked(row) and row["repetition"] == 0
    ]
    if not rows:
        limit_axis.set_visible(False)
        goodput_axis.set_visible(False)
        return
    end = settings["halving_seconds"]
    times, capacities = _capacity_steps(settings, end)
    limit_axis.step(times, capacities, where="post", color="grey", label="capacity N")
    queue = [capacity + settings["halving_queue_limit"] for capacity in capacities]
    limit_axis.step(times, queue, where="post", color="grey", linestyle=":", label="N + queue")
    colours = {"auto": "tab:red"}
    for row in rows:
        label, colour = str(row["concurrency"]), colours.get(str(row["concurrency"]), "tab:blue")
        samples = row["client"]["samples"]
        if row["concurrency"] == "auto":
            limit_axis.plot(
                [s[0] for s in samples], [s[1] for s in samples], color=colour, label="auto limit"
            )
        timeline = _timeline(row)
        seconds = [s["second"] + 0.5 for s in timeline if s["second"] < end]
        served = [s["served"] for s in timeline if s["second"] < end]
        refused = [s["refused"] for s in timeline if s["second"] < end]
        goodput_axis.plot(seconds, served, color=colour, label=f"{label}: served/s")
        goodput_axis.plot(
            seconds, refused, color=colour, linestyle=":", label=f"{label}: refused/s"
        )
    limit_axis.set_title("capacity halves: auto's live limit")
    limit_axis.set_xlabel("seconds")
    limit_axis.set_ylabel("requests in flight")
    limit_axis.set_ylim(bottom=0)
    limit_axis.legend(fontsize=7)
    goodput_axis.set_title("capacity halves: what the server saw")
    goodput_axis.set_xlabel("seconds")
    goodput_axis.set_ylabel("requests per second")
    goodput_axis.set_ylim(bottom=0)
    goodput_axis.legend(fontsize=7)


def _plot_sweep_limits(summary: dict[str, Any], axis: Any) -> None:
    rows = [
        row
        for row in summary["rows"]
        if row["scenario"] == "sweep"
        and row["concurrency"] == "auto"
        and _worked(row)
        and row["repetition"] == 0
    ]
    for row in rows:
        samples = row["client"]["samples"]
        (line,) = axis.plot(
            [s[0] for s in samples], [s[1] for s in samples], label=f"N = {row['capacity']}"
        )
        axis.axhline(row["capacity"], color=line.get_color(), linestyle=":", linewidth=1)
    axis.set_title("auto's live limit (dotted: N)")
    axis.set_xlabel("seconds")
    axis.set_ylabel("requests in flight")
    axis.set_yscale("log", base=2)
    axis.legend(fontsize=7)
