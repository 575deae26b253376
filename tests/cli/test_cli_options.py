"""Option values and usage errors: refused when parsed, exit 2, one line, nothing sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from osvi_async import InjectRequest
from osvi_async.testing import FaultPlan, OsviEmulator
from tests.chaos._cli import write_input
from tests.cli.test_cli import assert_clean, osvi


def _source(emulator: OsviEmulator, path: Path) -> list[InjectRequest]:
    session = emulator.create_session()
    items = [InjectRequest(session, f"item {i}") for i in range(3)]
    write_input(path, items)
    return items


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--rate", "nan", "'nan' is not a number"),
        ("--rate", "inf", "'inf' is not a finite number"),
        ("--grace", "nan", "'nan' is not a number"),
        ("--grace", "-inf", "not in the range"),
        ("--timeout", "inf", "'inf' is not a finite number"),
        ("--concurrency", "100000000", "1<=x<=10000"),
        ("--concurrency", "0", "1<=x<=10000"),
    ],
)
async def test_bad_option_values_are_refused_when_parsed(
    osvi_emulator: OsviEmulator, tmp_path: Path, option: str, value: str, words: str
) -> None:
    """nan, an infinity where it means nothing, a huge concurrency: exit 2, one line, no report."""
    source, report = tmp_path / "items.jsonl", tmp_path / "report.jsonl"
    _source(osvi_emulator, source)
    result = await osvi(
        "bulk", str(source), "--report", str(report), option, value, emulator=osvi_emulator
    )
    assert result.code == 2, result.err
    [line] = result.err.strip().splitlines()
    assert line.startswith(f"error: Invalid value for '{option}'")
    assert words in line
    assert line.endswith("bulk --help)")
    assert not report.exists()
    assert osvi_emulator.stats.requests_total == 0
    assert_clean(result, osvi_emulator.api_token)


async def test_grace_inf_means_wait_and_runs(osvi_emulator: OsviEmulator, tmp_path: Path) -> None:
    """--grace inf is accepted (wait as long as in-flight items need) and the run completes."""
    source = tmp_path / "items.jsonl"
    items = _source(osvi_emulator, source)
    result = await osvi("bulk", str(source), "--grace", "inf", emulator=osvi_emulator)
    assert result.code == 0, result.err
    assert osvi_emulator.applied(items[0].session_id) == tuple(i.context for i in items)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["bulk", "--nope"], "No such option '--nope'"),
        (["bulkk"], "No such command 'bulkk'"),
        (["bulk"], "Missing argument 'INPUT'"),
        (["inject", "only-one"], "Missing argument 'TEXT'"),
        (["demo", "--entries", "x"], "'x' is not a valid integer"),
    ],
)
async def test_usage_errors_are_one_line(args: list[str], words: str) -> None:
    """Click's usage errors: one line naming where help is, exit 2 (not Usage/Try/Error)."""
    result = await osvi(*args)
    assert result.code == 2, result.err
    [line] = result.err.strip().splitlines()
    assert line.startswith("error: ")
    assert words in line
    assert line.endswith("--help)")
    assert "Usage:" not in result.err
    assert result.out == ""


async def test_help_and_version_are_unchanged() -> None:
    """--help prints click's usage and options on stdout, --version the version: exit 0."""
    for args in (["--help"], ["bulk", "--help"], ["inject", "-h"]):
        result = await osvi(*args)
        assert result.code == 0, result.err
        assert result.out.startswith("Usage: ")
        assert "Options:" in result.out
        assert result.err == ""
    version = await osvi("--version")
    assert version.code == 0
    assert ", version " in version.out


async def test_missing_token_names_the_option_and_the_variable(tmp_path: Path) -> None:
    """No token: exit 2, one line naming --token and OSVI_API_TOKEN, not api_token=."""
    source = tmp_path / "items.jsonl"
    source.write_text('{"session_id": "x", "context": "y"}\n')
    for args in (["inject", "4718a326-417b-4dda-90d0-21fd65a11cb8", "x"], ["bulk", str(source)]):
        result = await osvi(*args)
        assert result.code == 2, result.err
        [line] = result.err.strip().splitlines()
        assert "--token" in line
        assert "OSVI_API_TOKEN" in line
        assert "api_token=" not in line


@pytest.mark.parametrize(
    "args",
    [
        ["--latency-ms", "nan"],
        ["--latency-ms", "inf"],
        ["--fail-rate", "nan"],
        ["--port", "x"],
        ["--bogus"],
        ["--token", ""],
        ["--token", "0123456789abcd"],
        ["--token", "\u00e9123456789abcdef"],
        ["--token", "0123456789abcde "],
    ],
)
async def test_serve_bad_values_are_one_line(args: list[str]) -> None:
    """osvi-async serve refuses nan, inf, unknown options and any token a client would refuse
    (empty, 14 characters, non-ASCII, a space) when parsing: exit 2, one line."""
    result = await osvi("serve", *args)
    assert result.code == 2, result.err
    [line] = result.err.strip().splitlines()
    assert line.startswith("osvi-async serve: error: ")
    assert line.endswith("(see osvi-async serve --help)")
    assert result.out == ""


async def test_bulk_opens_as_many_connections_as_its_concurrency(tmp_path: Path) -> None:
    """--concurrency 150 is not capped by the client's default 100 connections: with each
    answer 0.3 s late, the emulator sees more than 100 connections at once, nothing retried."""
    async with OsviEmulator(fault_plan=FaultPlan(latency_seconds=0.3)) as emulator:
        sessions = [emulator.create_session() for _ in range(150)]
        source = tmp_path / "items.jsonl"
        write_input(source, [InjectRequest(s, f"entry {n}") for n in range(2) for s in sessions])
        result = await osvi("bulk", str(source), "--concurrency", "150", emulator=emulator)
        assert result.code == 0, result.err
        assert emulator.stats.peak_open_connections > 100
        assert emulator.stats.requests_total == 300
