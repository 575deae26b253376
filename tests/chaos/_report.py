"""The figures the chaos suite measures, one row per scenario, for docs/reliability.md.

Tests add their figures through the `reliability` fixture; rows with the same scenario name
are summed (the examples of a property-based test add up to one row). When the environment
variable `OSVI_RELIABILITY_JSON` names a file, the rows are written there as JSON at the end of
the session, with the outcome of the tests that produced them; `scripts/reliability_table.py`
turns that file into the table. Without the variable nothing is written.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final, TypedDict

REPORT_ENV_VAR: Final = "OSVI_RELIABILITY_JSON"

# The figures that add up across tests and examples.
COUNTS: Final = (
    "items",
    "faults",
    "latency",
    "requests",
    "lost",
    "duplicated_flagged",
    "duplicated_unflagged",
    "misreported",
    "leaked_tasks",
    "leaked_connections",
    "leaked_fds",
    "examples",
)


class Figures(TypedDict, total=False):
    """Figures a test adds to its row; see `Row`."""

    items: int
    faults: int
    latency: int
    requests: int
    lost: int
    duplicated_flagged: int
    duplicated_unflagged: int
    misreported: int
    leaked_tasks: int
    leaked_connections: int
    leaked_fds: int
    examples: int


@dataclass
class Row:
    """One scenario's figures (see docs/reliability.md for what each one means)."""

    section: int
    scenario: str
    items: int = 0
    faults: int = 0
    latency: int = 0
    requests: int = 0
    lost: int = 0
    duplicated_flagged: int = 0
    duplicated_unflagged: int = 0
    misreported: int = 0
    leaked_tasks: int = 0
    leaked_connections: int = 0
    leaked_fds: int = 0
    examples: int = 0
    bounds: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tallies: dict[str, int] = field(default_factory=dict)
    tests: list[str] = field(default_factory=list)


class Report:
    """Rows by scenario, in the order they were first added, and the outcome of each test."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.outcomes: dict[str, str] = {}
        self.started = time.monotonic()

    def add(
        self,
        nodeid: str,
        *,
        section: int,
        scenario: str,
        bound: str | None,
        note: str | None,
        tally: Mapping[str, int] | None,
        counts: Mapping[str, int],
    ) -> None:
        """Add one measurement to the row of `scenario`; counts and tallies are summed.

        `bound` and `note` are kept once each; `tally` holds named counts for the row's
        "what happened" text, summed over the examples of a property-based test.
        """
        unknown = set(counts) - set(COUNTS)
        if unknown:
            raise TypeError(f"unknown figures: {sorted(unknown)}")
        row = self.rows.setdefault(scenario, Row(section=section, scenario=scenario))
        for name, value in counts.items():
            setattr(row, name, getattr(row, name) + value)
        if "examples" not in counts:
            row.examples += 1
        if bound is not None and bound not in row.bounds:
            row.bounds.append(bound)
        if note is not None and note not in row.notes:
            row.notes.append(note)
        for name, value in (tally or {}).items():
            row.tallies[name] = row.tallies.get(name, 0) + value
        if nodeid not in row.tests:
            row.tests.append(nodeid)

    def note_outcome(self, nodeid: str, outcome: str) -> None:
        """Remember how a test went; a failure in any phase makes it failed."""
        if self.outcomes.get(nodeid) != "failed":
            self.outcomes[nodeid] = outcome

    def as_json(self) -> dict[str, object]:
        """The rows in section order, each with "passed" or "failed" for its tests."""
        rows = []
        ordered = sorted(enumerate(self.rows.values()), key=lambda pair: (pair[1].section, pair[0]))
        for _, row in ordered:
            outcomes = {self.outcomes.get(test, "not run") for test in row.tests}
            status = "failed" if "failed" in outcomes else "passed"
            rows.append({**asdict(row), "status": status})
        return {
            "rows": rows,
            "tests": dict(sorted(self.outcomes.items())),
            "seconds": round(time.monotonic() - self.started, 1),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }

    def write_if_requested(self) -> Path | None:
        """Write the JSON file named by `OSVI_RELIABILITY_JSON`, if it is set."""
        target = os.environ.get(REPORT_ENV_VAR)
        if not target:
            return None
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n", encoding="utf-8")
        return path


REPORT: Final = Report()
"""The one report of this pytest session."""


@dataclass
class Recorder:
    """What a test holds: adds figures to `REPORT` under its own node id."""

    nodeid: str

    def add(
        self,
        *,
        section: int,
        scenario: str,
        bound: str | None = None,
        note: str | None = None,
        tally: Mapping[str, int] | None = None,
        **counts: int,
    ) -> None:
        """See `Report.add`; `counts` are `Figures`."""
        REPORT.add(
            self.nodeid,
            section=section,
            scenario=scenario,
            bound=bound,
            note=note,
            tally=tally,
            counts=counts,
        )
