"""The `osvi-async` command line (install the `cli` extra: `pip install 'osvi-async[cli]'`)."""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point of the `osvi-async` script."""
    try:
        from osvi_async.cli._app import main as app  # noqa: PLC0415 - optional deps
    except ImportError as error:  # click or rich missing
        sys.exit(
            f"osvi-async: the command line needs the 'cli' extra ({error.name} is missing): "
            "pip install 'osvi-async[cli]'"
        )
    app()


__all__ = ["main"]
