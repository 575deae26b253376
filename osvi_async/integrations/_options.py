"""Typing help shared by the integrations: their factories take `OsviClient`'s arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from osvi_async._client import OsviClient

P = ParamSpec("P")
R = TypeVar("R")


def takes_client_options(
    _client: Callable[P, OsviClient],
) -> Callable[[Callable[..., R]], Callable[P, R]]:
    """Give the decorated factory the parameters of `OsviClient()` for type checkers.

    The factories pass their arguments on to `OsviClient` only when the application starts;
    without this, a misspelt option (`timout=`) would pass `mypy --strict` and fail at start-up.
    The function itself is returned unchanged.
    """

    def decorate(function: Callable[..., R]) -> Callable[P, R]:
        return function

    return decorate


__all__ = ["takes_client_options"]
