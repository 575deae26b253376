"""The public API as users write it; checked by `mypy --strict`, never collected by pytest.

If a change to the package makes this file fail to type-check, users' code breaks the same way.
"""

from __future__ import annotations

import asyncio
import logging

import attrs

import osvi_async
from osvi_async import (
    APIConnectionError,
    APIStatusError,
    EngineError,
    EngineRejectedError,
    InjectContextResult,
    OsviClient,
    OsviError,
    RetryEvent,
    RetryPolicy,
)

log = logging.getLogger(__name__)


def on_retry(event: RetryEvent) -> None:
    log.info("retry %d in %.2f s after %s", event.attempt, event.delay, event.error)


async def inject(client: OsviClient, session_id: str, summary: str) -> tuple[str, ...]:
    try:
        result: InjectContextResult = await client.inject_context(session_id, summary)
    except EngineRejectedError as exc:
        reason: object = (exc.upstream_body or {}).get("reason")
        log.warning("refused: %s", reason)
        return ()
    except EngineError as exc:
        upstream: dict[str, object] | None = exc.upstream_body
        log.warning("engine failed after %d attempts: %s", exc.attempts, upstream)
        return ()
    except APIStatusError as exc:
        status: int = exc.status
        code: str | None = exc.code
        log.warning("HTTP %d %s", status, code)
        return ()
    except APIConnectionError as exc:
        sent: bool = exc.request_sent
        log.warning("no answer (sent=%s)", sent)
        return ()
    except OsviError:
        raise
    attempts: int = result.attempts
    log.info("took %d attempts", attempts)
    return result.context


async def main() -> None:
    policy = RetryPolicy(max_retries=5, deadline=20.0, on_retry=on_retry)
    strict = attrs.evolve(policy, retry_timeouts=False)
    async with OsviClient("0123456789abcdef", base_url="http://127.0.0.1:8787", retry=policy) as c:
        fast = c.with_options(timeout=2.0, retry=RetryPolicy.none())
        await inject(fast, "4718a326-417b-4dda-90d0-21fd65a11cb8", "summary")
        await c.inject_context("4718a326-417b-4dda-90d0-21fd65a11cb8", "x", retry=strict)
    version: str = osvi_async.__version__
    log.info("osvi-async %s", version)


if __name__ == "__main__":
    asyncio.run(main())
