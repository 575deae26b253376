"""The public surface: what `osvi_async` exports, and the shape of the error tree."""

from __future__ import annotations

import osvi_async
from osvi_async import errors


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted and every name in it is importable."""
    assert list(osvi_async.__all__) == sorted(osvi_async.__all__)
    for name in osvi_async.__all__:
        assert hasattr(osvi_async, name), name


def test_every_error_is_exported_and_under_osvi_error() -> None:
    """Each public error class is re-exported at the top and derives from OsviError."""
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert getattr(osvi_async, name) is cls
        assert issubclass(cls, osvi_async.OsviError)


def test_error_tree() -> None:
    """The hierarchy the docs draw is the one the code has."""
    assert issubclass(osvi_async.ClientValidationError, ValueError)
    assert issubclass(osvi_async.APITimeoutError, osvi_async.APIConnectionError)
    assert issubclass(osvi_async.EngineRejectedError, osvi_async.EngineError)
    for name in ("BadRequestError", "AuthenticationError", "NotFoundError", "RateLimitError"):
        assert issubclass(getattr(osvi_async, name), osvi_async.APIStatusError)
    assert issubclass(osvi_async.EngineError, osvi_async.APIStatusError)
    assert issubclass(osvi_async.ServerError, osvi_async.APIStatusError)
    assert not issubclass(osvi_async.ResponseDecodeError, osvi_async.APIStatusError)


def test_error_str_mentions_attempts_only_when_retried() -> None:
    """A single attempt is not mentioned; several are."""
    error = osvi_async.OsviError("boom", attempts=1)
    assert str(error) == "boom"
    error.attempts = 3
    assert str(error) == "boom (after 3 attempts)"
    assert error.message == "boom"


def test_refused_for_good_is_public() -> None:
    """The rule that decides holding and resending is importable from the top."""
    refusal = osvi_async.NotFoundError("gone", status=404, code="session_not_found", body="")
    outage = osvi_async.ServerError("down", status=503, code=None, body="")
    assert osvi_async.refused_for_good(refusal) is True
    assert osvi_async.refused_for_good(outage) is False


def test_importing_the_package_does_not_load_aiohttp() -> None:
    """`import osvi_async` stays light (the CLI installs its signal handlers right after it)."""
    import subprocess
    import sys

    probe = (
        "import sys, osvi_async; print(sorted(m for m in ('aiohttp', 'attrs') if m in sys.modules))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert shown == "[]"
    assert osvi_async.OsviClient.__name__ == "OsviClient"  # and the lazy names still resolve
