"""Chaos-suite fixtures and the hooks that collect its figures for docs/reliability.md."""

from __future__ import annotations

import pytest

from tests.chaos._report import REPORT, Recorder


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Recorder:
    """Records this test's figures into the reliability report (rows summed by scenario)."""
    return Recorder(request.node.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Note each test's outcome, so the table says which rows come from a failing test."""
    if report.nodeid.startswith("tests/chaos/"):
        REPORT.note_outcome(report.nodeid, report.outcome)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the figures as JSON when OSVI_RELIABILITY_JSON asks for it."""
    REPORT.write_if_requested()
