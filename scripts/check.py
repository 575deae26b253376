"""Install everything the checks need into ./.venv, then run every check CI runs.

Usage (from the repository root, with any Python 3.11+):  python3 scripts/check.py

Before the steps it also installs Prism (``@stoplight/prism-cli``, a third-party mock server
the tests in tests/prism/ run against) with npm into ./.prism, once: a later run finds the pinned
version there and skips npm. Without npm it installs Debian's nodejs and npm when it runs as
root with apt (a fresh CI machine), and otherwise stops at once, since those tests would fail.

Steps: ruff lint, ruff format check, mypy --strict (package and the typed usage file),
mkdocs build --strict, and pytest with branch coverage (at least 90%), in parallel on every
core with pytest-xdist. Every step runs even if an earlier one failed, so one run shows every
problem; the exit code is non-zero if any failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"

# 5.14.2 is the newest Prism whose package.json accepts Node 20 (CI's Node); 5.15+ needs Node 24.
# tests/prism/conftest.py runs ./.prism/node_modules/.bin/prism and fails when it is missing.
PRISM_VERSION = "5.14.2"
PRISM_DIR = ROOT / ".prism"
PRISM_PACKAGE = PRISM_DIR / "node_modules" / "@stoplight" / "prism-cli" / "package.json"

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
            # One worker per core (pytest-xdist); tests that share the private RabbitMQ stay
            # on one worker (tests/conftest.py marks them), so only one broker boots.
            "-n",
            "auto",
            "--dist",
            "loadgroup",
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


def installed_prism_version() -> str | None:
    """The version of the Prism already installed in ./.prism, or None."""
    try:
        version = json.loads(PRISM_PACKAGE.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    return str(version)


def install_npm() -> str | None:
    """On a machine without npm, as root with apt (a fresh CI machine): install Debian's
    nodejs and npm. Returns npm's path, or None when that is not possible."""
    apt = shutil.which("apt-get")
    if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "nodejs", "npm"]):
        if subprocess.call(command, env=env) != 0:  # noqa: S603 - our own fixed commands
            return None
    return shutil.which("npm")


def install_prism() -> None:
    """Install the pinned Prism into ./.prism with npm, unless that version is already there."""
    if installed_prism_version() == PRISM_VERSION:
        return
    npm = shutil.which("npm") or install_npm()
    if npm is None:
        sys.exit(
            "npm not found: the tests in tests/prism/ run the Prism mock server, which this "
            "script installs with npm; install Node.js 20+ with npm and run it again"
        )
    started = time.monotonic()
    package = f"@stoplight/prism-cli@{PRISM_VERSION}"
    command = [npm, "install", "--prefix", str(PRISM_DIR), "--no-audit", "--no-fund", package]
    if run(command) != 0 or installed_prism_version() != PRISM_VERSION:
        sys.exit(f"installing {package} into {PRISM_DIR} with npm failed")
    print(f"--- prism {PRISM_VERSION}: installed in {time.monotonic() - started:.1f} s", flush=True)


def main() -> int:
    install()
    install_prism()
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
