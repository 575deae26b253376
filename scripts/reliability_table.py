"""Run the chaos suite and rewrite the figures in docs/reliability.md.

Usage, from the repository root, with the project's environment (`python3 scripts/check.py`
creates it in .venv):

    .venv/bin/python scripts/reliability_table.py                  # run pytest tests/chaos
    .venv/bin/python scripts/reliability_table.py --keep-json build/reliability.json
    .venv/bin/python scripts/reliability_table.py --from-json build/reliability.json

The tests write their figures as JSON to the file named by OSVI_RELIABILITY_JSON
(tests/chaos/_report.py); this script points that variable at a temporary file, runs the
suite, and replaces everything between the two markers in docs/reliability.md with the
tables. The table is written even when tests fail (their rows say so); the exit status is
pytest's, so CI can run this script instead of `pytest tests/chaos`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
START = "<!-- reliability-table:start -->"
END = "<!-- reliability-table:end -->"
ENV_VAR = "OSVI_RELIABILITY_JSON"


def run_suite(json_path: Path, extra: list[str]) -> int:
    """Run `pytest tests/chaos` with the figures going to `json_path`; return its status."""
    env = {**os.environ, ENV_VAR: str(json_path)}
    command = [sys.executable, "-m", "pytest", "tests/chaos", "-q", "-p", "no:cacheprovider"]
    print("$", " ".join(command[2:] + extra), flush=True)
    return subprocess.call([*command, *extra], cwd=ROOT, env=env)  # noqa: S603 - our own command


def cell(text: object) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def number(value: int) -> str:
    """1234 -> "1,234"."""
    return f"{value:,}"


def render(data: dict[str, Any]) -> str:
    """The generated part of docs/reliability.md: two tables and the list of failing tests."""
    rows = data["rows"]
    tests = data["tests"]
    failed = sorted(test for test, outcome in tests.items() if outcome == "failed")
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    lines = [
        f"Generated {when} by `scripts/reliability_table.py`: {len(tests)} tests, "
        f"{len(tests) - len(failed)} passed, {len(failed)} failed; the suite ran in "
        f"{data['seconds']:g} s on {data['cpus']} CPUs (Python {data['python']}).",
        "",
        "| # | Scenario | Items | Faults injected | Requests sent | Lost "
        "| Duplicated (flagged / unflagged) | Applied, reported not applied "
        "| Leaked (tasks / conns / fds) | Tests |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        faults = number(row["faults"])
        if row["latency"]:
            faults += f" (+{number(row['latency'])} delayed)"
        examples = f" ({row['examples']} runs)" if row["examples"] > 1 else ""
        leaked = f"{row['leaked_tasks']} / {row['leaked_connections']} / {row['leaked_fds']}"
        status = "pass" if row["status"] == "passed" else "**FAIL**"
        lines.append(
            f"| {row['section']} | {cell(row['scenario'])}{examples} | {number(row['items'])} "
            f"| {faults} | {number(row['requests'])} | {row['lost']} "
            f"| {row['duplicated_flagged']} / {row['duplicated_unflagged']} "
            f"| {row['misreported']} | {leaked} | {status} |"
        )
    lines += ["", "| Scenario | Bounds asserted (measured) | What happened |", "|---|---|---|"]
    for row in rows:
        bounds = "<br>".join(cell(bound) for bound in row["bounds"]) or "-"
        texts = list(row["notes"])
        tallies = row.get("tallies") or {}
        if tallies:
            texts.append(", ".join(f"{name}: {number(value)}" for name, value in tallies.items()))
        notes = "<br>".join(cell(text) for text in texts) or "-"
        lines.append(f"| {cell(row['scenario'])} | {bounds} | {notes} |")
    if failed:
        lines += ["", "Failing tests in this run:", ""]
        lines += [f"- `{test}`" for test in failed]
    return "\n".join(lines)


def rewrite(doc: Path, generated: str) -> None:
    """Replace the text between the markers of `doc` with `generated`."""
    text = doc.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{doc} lacks the markers {START} and {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{generated}\n{END}{tail}", encoding="utf-8")


def main() -> int:
    """Run the suite (or read its JSON), then rewrite the table; return pytest's status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-json", type=Path, help="read figures from this file, run nothing")
    parser.add_argument("--keep-json", type=Path, help="also keep the figures in this file")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest")
    args = parser.parse_args()
    status = 0
    if args.from_json is not None:
        data = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        with tempfile.TemporaryDirectory() as scratch:
            json_path = Path(scratch) / "reliability.json"
            status = run_suite(json_path, args.pytest_args)
            if not json_path.exists():
                print("the chaos suite wrote no figures; the table is unchanged", file=sys.stderr)
                return status or 1
            raw = json_path.read_text(encoding="utf-8")
        data = json.loads(raw)
        if args.keep_json is not None:
            args.keep_json.parent.mkdir(parents=True, exist_ok=True)
            args.keep_json.write_text(raw, encoding="utf-8")
    rewrite(DOC, render(data))
    print(f"rewrote the table in {DOC.relative_to(ROOT)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
