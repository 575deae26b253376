"""Test kit: an emulator of the OSVI Chat v1 API on 127.0.0.1, with failures on purpose.

``OsviEmulator`` works without pytest (``async with OsviEmulator() as emulator``); the fixtures
live in the opt-in plugin ``osvi_async.testing.pytest_plugin``. ``python -m osvi_async.testing``
serves the emulator from the command line. See docs/testing.md.
"""

from osvi_async.testing._capacity import CapacityModel, CapacitySecond, CapacityStats
from osvi_async.testing._emulator import OsviEmulator, generate_api_token
from osvi_async.testing._faults import (
    ENDPOINT_NAMES,
    FaultDecision,
    FaultKind,
    FaultPlan,
    ManualClock,
)
from osvi_async.testing._serve import main, serve
from osvi_async.testing._state import BUCKET_SIZE, EmulatorStats

__all__ = [
    "BUCKET_SIZE",
    "ENDPOINT_NAMES",
    "CapacityModel",
    "CapacitySecond",
    "CapacityStats",
    "EmulatorStats",
    "FaultDecision",
    "FaultKind",
    "FaultPlan",
    "ManualClock",
    "OsviEmulator",
    "generate_api_token",
    "main",
    "serve",
]
