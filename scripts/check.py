"""Install everything the checks need into ./.venv, then run every check CI runs.

Usage (from the repository root, with any Python 3.11+):  python3 scripts/check.py

Steps: ruff lint, ruff format check, mypy --strict (package and the typed usage file),
mkdocs build --strict, and pytest with branch coverage (at least 90%). Every step runs even if
an earlier one failed, so one run shows every problem; the exit code is non-zero if any failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"

STEPS: list[tuple[str, list[str]]] = [
    ("ruff check", [str(BIN / "ruff"), "check", "."]),
    ("ruff format", [str(BIN / "ruff"), "format", "--check", "."]),
    ("mypy", [str(BIN / "mypy"), "--strict", "osvi_async", "tests/typing"]),
    ("mkdocs", [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(ROOT / "site")]),
    (
        "pytest",
        [
            str(PYTHON),
            "-m",
            "pytest",
            "--cov=osvi_async",
            "--cov-branch",
            "--cov-report=term",
            "--cov-fail-under=90",
        ],
    ),
]


def run(command: list[str]) -> int:
    """Run one command from the repository root, streaming its output."""
    print(f"$ {' '.join(command)}", flush=True)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material prints an ad otherwise
    return subprocess.call(command, cwd=ROOT, env=env)  # noqa: S603 - our own fixed commands


def install() -> None:
    """Create the virtual environment once and install the package with its dev extra."""
    if not PYTHON.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if run([*pip, "--editable", f"{ROOT}[dev,cli]"]) != 0:
        sys.exit("installing the package and its dev dependencies failed")


def main() -> int:
    install()
    failed: list[str] = []
    for name, command in STEPS:
        started = time.monotonic()
        code = run(command)
        print(
            f"--- {name}: {'ok' if code == 0 else f'FAILED ({code})'} "
            f"in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        if code != 0:
            failed.append(name)
    if failed:
        print(f"FAILED: {', '.join(failed)}", flush=True)
        return 1
    print("all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
