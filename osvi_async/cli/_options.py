"""Option types and usage errors of the `osvi-async` commands.

Click's `FloatRange` lets `nan` through (every comparison with it is False) and takes `inf` as
a number; either then fails far from the option that caused it (inside a signal handler, or
after the report header was written). `FiniteFloat` refuses them when the arguments are parsed.
"""

from __future__ import annotations

import math
from typing import Any, Final

import click

from osvi_async.cli._output import visible

MAX_CONCURRENCY: Final = 10_000
"""The most requests a bulk run keeps in flight (each costs a task and a socket)."""


class FiniteFloat(click.FloatRange):
    """A float within a range, never `nan`, and `inf` only where it means "no limit"."""

    def __init__(
        self, *, min: float | None = None, min_open: bool = False, allow_inf: bool = False
    ) -> None:
        """`min` and `min_open` as in `click.FloatRange`; `allow_inf` admits `inf`."""
        super().__init__(min=min, min_open=min_open)
        self.allow_inf = allow_inf
        self.name = "finite number" if not allow_inf else "number"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        """Parse `value`, refusing nan (and inf unless allowed) before the range check."""
        number = float(super(click.FloatRange, self).convert(value, param, ctx))
        if math.isnan(number):
            self.fail(f"{value!r} is not a number.", param, ctx)
        if math.isinf(number) and not (self.allow_inf and number > 0):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return float(super().convert(number, param, ctx))


class Concurrency(click.ParamType[int | str, object]):
    """`--concurrency`: a whole number of requests in flight, or `auto` (adaptive)."""

    name = "integer or auto"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | str:
        """`auto` as is, else an int from 1 to MAX_CONCURRENCY."""
        if value == "auto":
            return "auto"
        try:
            number = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither a whole number nor auto.", param, ctx)
        return int(click.IntRange(min=1, max=MAX_CONCURRENCY).convert(number, param, ctx))


def usage_line(error: click.UsageError) -> str:
    """A usage error as the one line the command prints: the message and where help is."""
    message = visible(error.format_message())
    where = error.ctx.command_path if error.ctx is not None else "osvi-async"
    return f"error: {message} (see {where} --help)"
