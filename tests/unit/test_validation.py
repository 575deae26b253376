"""Construction-time checks: token, base URL, timeouts, environment fallbacks, reprs."""

from __future__ import annotations

import pytest

from osvi_async import ClientValidationError, OsviClient, RetryBudget, RetryPolicy
from osvi_async._config import ClientConfig
from tests.support import TOKEN


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start each test without OSVI_* variables from the developer's shell."""
    monkeypatch.delenv("OSVI_API_TOKEN", raising=False)
    monkeypatch.delenv("OSVI_BASE_URL", raising=False)


def test_missing_token_names_the_env_var() -> None:
    """No token anywhere: the error tells the user to set OSVI_API_TOKEN."""
    with pytest.raises(ClientValidationError, match="OSVI_API_TOKEN"):
        OsviClient()


def test_env_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Token and base URL come from the environment; the default URL is production https."""
    monkeypatch.setenv("OSVI_API_TOKEN", TOKEN)
    assert OsviClient().base_url == "https://api.osvi.ai"
    monkeypatch.setenv("OSVI_BASE_URL", "http://127.0.0.1:8787/")
    assert OsviClient().base_url == "http://127.0.0.1:8787"


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("short", "16 characters long, got 5"),
        ("0123456789abcdefX", "16 characters long, got 17"),
        ("0123456789ab cde", "whitespace"),
        ("0123456789abcd\x00e", "control"),
        (1234567890123456, "must be a str"),
    ],
)
def test_bad_tokens_are_refused_without_echo(token: object, problem: str) -> None:
    """A malformed token is refused, and the message never repeats it."""
    with pytest.raises(ClientValidationError, match=problem) as caught:
        OsviClient(token)  # type: ignore[arg-type]
    assert str(token) not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.osvi.ai",
        "https://api.osvi.ai/",
        "https://proxy.example.com/osvi",
        "http://127.0.0.1:8080",
        "http://127.5.6.7",
        "http://[::1]:9000",
        "http://localhost:1234",
    ],
)
def test_accepted_base_urls(url: str) -> None:
    """https anywhere, http only on loopback; a trailing slash is dropped."""
    assert OsviClient(TOKEN, base_url=url).base_url == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://api.osvi.ai", "must use https"),
        ("http://10.0.0.1", "must use https"),
        ("ftp://api.osvi.ai", "absolute http"),
        ("api.osvi.ai", "absolute http"),
        ("https://user:pw@api.osvi.ai", "credentials"),
        ("https://api.osvi.ai?x=1", "query"),
        ("https://api.osvi.ai?", "query"),
        ("https://api.osvi.ai/#", "query or fragment"),
        ("https://api.osvi.ai/v1?#", "query"),
        ("https://api.osvi.ai/a b", "whitespace"),
        (" https://api.osvi.ai", "whitespace"),
        ("https://api.osvi.ai\t", "whitespace"),
        ("https://api.osvi.ai/\x00", "control"),
        ("https://api.osvi.ai:99999", "not a valid URL"),
        (42, "must be a str"),
    ],
)
def test_refused_base_urls(url: object, problem: str) -> None:
    """Plain http off loopback, other schemes, credentials, queries (even an empty `?` or
    `#`), whitespace and control characters are refused."""
    with pytest.raises(ClientValidationError, match=problem):
        OsviClient(TOKEN, base_url=url)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"timeout": 0}, "positive"),
        ({"timeout": float("inf")}, "positive"),
        ({"timeout": True}, "number of seconds"),
        ({"timeout": "5"}, "number of seconds"),
        ({"max_connections": 0}, ">= 1"),
        ({"max_connections": 2.5}, "must be an int"),
        ({"retry": {"max_retries": 1}}, "RetryPolicy"),
    ],
)
def test_bad_options(kwargs: dict[str, object], problem: str) -> None:
    """Bad timeouts, limits and policies are refused when the client is built."""
    with pytest.raises(ClientValidationError, match=problem):
        OsviClient(TOKEN, **kwargs)  # type: ignore[arg-type]


def test_token_never_in_reprs() -> None:
    """Neither the client's nor its config's repr shows the token."""
    client = OsviClient(TOKEN, base_url="http://127.0.0.1:1", retry=RetryPolicy.none())
    config = ClientConfig.resolve(
        api_token=TOKEN, base_url=None, timeout=3, retry=None, max_connections=5
    )
    assert TOKEN not in repr(client)
    assert TOKEN not in repr(config)
    assert TOKEN not in repr(client._transport)
    assert config.timeout == 3.0
    assert "base_url='http://127.0.0.1:1'" in repr(client)


class Sneaky(str):
    """A str whose formatting and str() say something else than its characters."""

    __slots__ = ()

    def __format__(self, spec: str) -> str:
        return "../../admin%2F"

    def __str__(self) -> str:
        return "../../admin%2F"


def test_str_subclasses_are_validated_and_used_as_plain_str() -> None:
    """Session ids, contexts and base URLs that are str subclasses come back as plain str."""
    from osvi_async._validation import check_context, check_session_id

    session_id = "4718a326-417b-4dda-90d0-21fd65a11cb8"
    for checked in (check_session_id(Sneaky(session_id)), check_context(Sneaky("text"))):
        assert type(checked) is str
        assert f"{checked}" != "../../admin%2F"
    assert check_session_id(Sneaky(session_id)) == session_id
    client = OsviClient(TOKEN, base_url=Sneaky("https://api.osvi.ai"))
    assert type(client.base_url) is str
    assert client.base_url == "https://api.osvi.ai"


@pytest.mark.parametrize("session", ["nope", 42, object()])
def test_session_must_be_an_aiohttp_client_session(session: object) -> None:
    """session= anything but an aiohttp.ClientSession is refused when the client is built."""
    with pytest.raises(ClientValidationError, match=r"aiohttp\.ClientSession"):
        OsviClient(TOKEN, session=session)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"retry_statuses": "502"}, "set of HTTP status codes"),
        ({"retry_statuses": b"502"}, "set of HTTP status codes"),
        ({"retry_statuses": 502}, "set of HTTP status codes"),
        ({"retry_statuses": {"502"}}, "int from 100 to 599"),
        ({"retry_statuses": {True}}, "int from 100 to 599"),
        ({"retry_statuses": {99}}, "int from 100 to 599"),
        ({"retry_statuses": {600}}, "int from 100 to 599"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"initial_delay": -0.1}, "initial_delay"),
        ({"initial_delay": float("inf")}, "initial_delay"),
        ({"max_delay": float("nan")}, "max_delay"),
        ({"max_retry_after": float("inf")}, "max_retry_after"),
        ({"initial_delay": "1"}, "initial_delay"),
        ({"deadline": 0}, "deadline"),
        ({"deadline": float("inf")}, "deadline"),
        ({"deadline": float("nan")}, "deadline"),
        ({"retry_ambiguous": "no"}, "retry_ambiguous must be True, False or None"),
        ({"retry_timeouts": 0}, "retry_timeouts must be True or False"),
        ({"on_retry": 3}, "on_retry must be callable"),
        ({"sleep": "x"}, "sleep must be callable"),
        ({"random": 0.5}, "random must be callable"),
    ],
)
def test_bad_retry_policies_are_refused(kwargs: dict[str, object], problem: str) -> None:
    """Every bad RetryPolicy field raises ClientValidationError (still a ValueError)."""
    with pytest.raises(ClientValidationError, match=problem) as caught:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)


def test_retry_statuses_accept_any_collection_of_ints() -> None:
    """A list, set or tuple of status codes becomes a frozenset."""
    assert RetryPolicy(retry_statuses=[502, 503]).retry_statuses == frozenset({502, 503})
    assert RetryPolicy(retry_statuses=()).retry_statuses == frozenset()


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"per_request": -1.0}, "per_request"),
        ({"per_success": float("nan")}, "per_success"),
        ({"max_tokens": float("inf")}, "max_tokens"),
    ],
)
def test_bad_retry_budgets_are_refused(kwargs: dict[str, object], problem: str) -> None:
    """RetryBudget fields are checked by the same functions, with the same error."""
    with pytest.raises(ClientValidationError, match=problem):
        RetryBudget(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "token",
    ["é" * 16, "0123456789abcde\u00e9", "0123456789abcd\u200be"],
)
def test_non_ascii_tokens_are_refused(token: str) -> None:
    """A token must be 16 printable ASCII characters; the message says so, without echo."""
    with pytest.raises(ClientValidationError, match="printable ASCII") as caught:
        OsviClient(token)
    assert token not in str(caught.value)
