"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

import osvi_async._client as client_module
from osvi_async import OsviClient, RetryPolicy
from osvi_async._transport import HTTP_BACKENDS, HttpBackend, Transport, open_transport
from tests.support import BASE_URL, TOKEN, FakeSleep

pytest_plugins = ["osvi_async.testing.pytest_plugin", "tests.brokers.rabbit"]

_EVERY_BACKEND: tuple[str, ...] = ("integration", "chaos", "security")
"""Suites whose every test runs once per HTTP backend: the guarantees they check are the
SDK's, whichever stack carries the requests."""


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker of tests about the aiohttp stack itself."""
    config.addinivalue_line(
        "markers",
        "aiohttp_only: the test is about aiohttp itself (a borrowed session, its internals); "
        "it runs on the aiohttp backend only",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Give every test of the suites above (and any test asking for `http_backend`) one run
    per backend; `@pytest.mark.aiohttp_only` keeps a test on aiohttp."""
    suite = Path(str(metafunc.definition.path)).parent.name
    if "http_backend" not in metafunc.fixturenames and suite not in _EVERY_BACKEND:
        return
    if "http_backend" not in metafunc.fixturenames:
        metafunc.fixturenames.append("http_backend")
    only_aiohttp = metafunc.definition.get_closest_marker("aiohttp_only") is not None
    backends = ("aiohttp",) if only_aiohttp else HTTP_BACKENDS
    metafunc.parametrize("http_backend", backends, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`--dist loadgroup`), keep every test that uses the private RabbitMQ
    on one worker: each worker would otherwise boot a broker of its own (~6.5 s of CPU on a
    2-core machine) for the same tests. Without xdist the mark does nothing."""
    for item in items:
        if "rabbitmq" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("rabbitmq"))


@functools.cache
def _start_reqwest_runtime() -> object:
    """Build one pyreqwest client for the whole session: the first one starts pyreqwest's
    runtime, whose few file descriptors live as long as the process. Started here, they do
    not count as a leak of whichever test happens to build the first client."""
    from pyreqwest.client import ClientBuilder

    return ClientBuilder().build()


@pytest.fixture
def http_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> HttpBackend:
    """The HTTP stack this test's clients send through: every OsviClient made without a
    borrowed session (and every CLI subprocess, through OSVI_HTTP_BACKEND) uses it."""
    backend = cast("HttpBackend", request.param)
    if backend == "reqwest":
        _start_reqwest_runtime()

    def open_on_backend(requested: str, **options: Any) -> Transport:
        if requested == "aiohttp" and options.get("session") is None:
            requested = backend
        return open_transport(requested, **options)

    monkeypatch.setattr(client_module, "open_transport", open_on_backend)
    monkeypatch.setenv("OSVI_HTTP_BACKEND", backend)
    return backend


@pytest.fixture
def fake_sleep() -> FakeSleep:
    """A sleep that records its argument."""
    return FakeSleep()


@pytest.fixture
def fast_retry(fake_sleep: FakeSleep) -> RetryPolicy:
    """The default policy, with recorded sleeps and a fixed jitter of one half."""
    return RetryPolicy(sleep=fake_sleep, random=lambda: 0.5)


@pytest.fixture
async def client(fast_retry: RetryPolicy) -> AsyncIterator[OsviClient]:
    """A client pointed at the production URL; unit tests intercept it with aioresponses."""
    async with OsviClient(TOKEN, base_url=BASE_URL, retry=fast_retry) as osvi:
        yield osvi
