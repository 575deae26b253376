"""A FastAPI backend that adds a note to a customer's chat: one OsviClient for the whole app.

Run it against the emulator (or the real API, with your token)::

    export OSVI_API_TOKEN=tok_0123456789ab OSVI_BASE_URL=http://127.0.0.1:8081
    python -m osvi_async.testing --port 8081 --token $OSVI_API_TOKEN &
    osvi-async session create --agent agent_emulator --customer +15551112222
    uvicorn --app-dir examples fastapi_app:app --host 127.0.0.1 --port 8000

    curl -X POST http://127.0.0.1:8000/customers/+15551112222/notes \\
        -H 'content-type: application/json' \\
        -d '{"agent_uuid": "agent_emulator", "note": "Voice call ended: wants a refund."}'

Needs `pip install 'osvi-async[fastapi]' uvicorn`. On SIGTERM uvicorn stops accepting
connections, lets every request in flight finish, then runs the lifespan's shutdown, which
closes the client: no note is cut off half-way.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from osvi_async import ClientValidationError, NotFoundError, OsviClient, OsviError
from osvi_async.integrations.fastapi import OsviClientDep, osvi_lifespan

logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
logger = logging.getLogger("fastapi_app")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
    """The app's own start-up and shutdown, around the OSVI client's (which opens first).

    Configure OpenTelemetry (if you use it) before entering osvi_lifespan: the client looks
    for it when it is built. Yielding the state lets applications mounted on this one find
    the client too.
    """
    async with osvi_lifespan(timeout=10.0)(app) as state:
        logger.info("ready")
        yield state
        logger.info("shutting down")
    client: OsviClient = app.state.osvi_client
    logger.info("OSVI client closed: %s", client.closed)


app = FastAPI(lifespan=lifespan)


class Note(BaseModel):
    """A note for the customer's active chat with one agent."""

    agent_uuid: str
    note: str


class NoteAdded(BaseModel):
    """Where the note went; `possible_duplicate` asks you to check the session for a double."""

    session_id: str
    attempts: int
    possible_duplicate: bool


@app.post("/customers/{customer_id}/notes", status_code=201)
async def add_note(customer_id: str, body: Note, client: OsviClientDep) -> NoteAdded:
    """Append the note to the customer's active session with the agent."""
    try:
        result = await client.inject_context_for_customer(customer_id, body.agent_uuid, body.note)
    except ClientValidationError as error:
        raise HTTPException(422, str(error)) from error
    except NotFoundError as error:
        raise HTTPException(404, "the customer has no active chat with this agent") from error
    except OsviError as error:
        # The caller may resend only when nothing can have been applied.
        detail = {
            "error": type(error).__name__,
            "may_have_been_applied": error.may_have_been_applied,
        }
        raise HTTPException(502, detail) from error
    return NoteAdded(
        session_id=result.session_id,
        attempts=result.attempts,
        possible_duplicate=result.possible_duplicate,
    )
