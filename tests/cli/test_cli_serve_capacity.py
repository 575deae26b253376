"""`osvi-async serve` and `osvi-async demo` with the emulator's capacity model."""

from __future__ import annotations

import re

from tests.cli.test_cli import osvi


async def test_demo_with_capacity_verifies_and_never_exceeds_it() -> None:
    """`demo --capacity 8` verifies its run; the emulator never served more than 8 at once."""
    result = await osvi(
        "demo", "--sessions", "20", "--entries", "300", "--concurrency", "16", "--capacity", "8"
    )
    assert result.code == 0, result.out + result.err
    assert "OK: every accepted entry landed exactly once" in result.out
    assert "capacity 8 at once (queue 8)" in result.out
    peak = re.search(r"limit 8, peak (\d+) in service", result.out)
    assert peak is not None, result.out
    assert 1 <= int(peak[1]) <= 8


async def test_demo_refuses_a_zero_capacity() -> None:
    """`demo --capacity 0` is a usage error: exit 2, nothing run."""
    result = await osvi("demo", "--capacity", "0")
    assert result.code == 2
    assert "--capacity" in result.err
    assert result.out == ""


async def test_serve_refuses_a_bad_capacity_on_one_line() -> None:
    """`serve --capacity 2 --jitter 1.5` prints one error line naming --jitter and exits 2."""
    result = await osvi("serve", "--capacity", "2", "--jitter", "1.5")
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert result.err.startswith("osvi-async serve: error: --jitter must be within [0, 1)")
