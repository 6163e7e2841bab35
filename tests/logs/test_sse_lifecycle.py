"""The SSE response's own lifecycle (app/api/event_stream.py): errors answered before any
header, a client that leaves an idle stream ends it at once (its subscription is gone), and an
idle stream learns of a chunk another writer stored from its build's poller (LiveHub.poll), not
from a wake-up of its own."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.config import Settings
from app.db import Database
from app.errors import INTERNAL_ERROR
from app.logs.store import insert_chunks
from tests.support import create, sse_events, wait_until, workflow

WAITS = workflow(
    """
    jobs:
      a:
        steps:
          - run: while [ ! -e ../go ]; do sleep 0.05; done
    """
)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # No keep-alive wake-up during a test: a stream wakes only when told something happened.
    return {"sse_ping_seconds": 600.0}


def _go(settings: Settings, build_id: int) -> Path:
    return Path(settings.workspace_root) / str(build_id) / "go"


async def test_unknown_build_or_bad_resume_id_is_an_error(client: httpx.AsyncClient) -> None:
    # The build check runs after the route returned (app/api/event_stream.py), before headers.
    missing = await client.get("/builds/999999/logs/stream")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert "detail" in missing.json()
    body = await create(client, "jobs:\n  a:\n    steps:\n      - run: echo hi\n")
    bad = await client.get(
        f"/builds/{body['id']}/logs/stream", headers={"Last-Event-ID": "not-a-seq"}
    )
    assert bad.status_code == 422


async def test_a_failing_build_check_is_a_500_without_internals(
    client: httpx.AsyncClient, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The check runs outside every exception handler of the app (EventStreamHandoff wraps the
    # whole stack), so it answers an infrastructure failure itself, as the app's handler would.
    body = await create(client, "jobs:\n  a:\n    steps:\n      - run: echo hi\n")
    db = Database(database_url)
    try:
        async with db.transaction() as session:
            await session.exec(text("ALTER TABLE builds RENAME TO builds_away"))  # type: ignore[call-overload]
        try:
            with caplog.at_level(logging.ERROR):
                failed = await client.get(f"/builds/{body['id']}/logs/stream")
        finally:
            async with db.transaction() as session:
                await session.exec(text("ALTER TABLE builds_away RENAME TO builds"))  # type: ignore[call-overload]
    finally:
        await db.dispose()
    assert failed.status_code == 500
    assert failed.json() == {"detail": INTERNAL_ERROR}
    assert "unhandled error on GET" in caplog.text  # the trace is in the log, not the answer
    assert "Traceback" not in failed.text and "builds" not in failed.text


async def _open_streams(live_url: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{live_url}/metrics")).text
    lines = [line for line in text.splitlines() if line.startswith("ci_sse_subscribers")]
    return sum(float(line.split()[-1]) for line in lines)


def _closed(live_url: str) -> Callable[[], Awaitable[bool]]:
    async def closed() -> bool:
        return await _open_streams(live_url) == 0

    return closed


async def test_a_client_leaving_an_idle_stream_ends_it_at_once(
    live_url: str, settings: Settings
) -> None:
    # No ping is due: the server learns of the disconnect from the ASGI receive channel.
    async with httpx.AsyncClient(base_url=f"{live_url}/api/v1", timeout=60) as client:
        body = await create(client, WAITS)
        url = f"/builds/{body['id']}/logs/stream"
        async with client.stream("GET", url) as response:
            async for event in sse_events(response):
                if event.event == "status":
                    break
            assert await _open_streams(live_url) == 1
        await wait_until(_closed(live_url), "the server to close the stream", timeout=10)
        _go(settings, body["id"]).touch()


async def test_an_idle_stream_gets_a_chunk_stored_by_another_writer(
    live_url: str, settings: Settings, database_url: str
) -> None:
    # Another replica's writer: no hub, no NOTIFY. Only the build's poller can see its chunk.
    other = Database(database_url)
    async with httpx.AsyncClient(base_url=f"{live_url}/api/v1", timeout=30) as client:
        body = await create(client, WAITS)
        try:
            url = f"/builds/{body['id']}/logs/stream"
            async with client.stream("GET", url) as response:
                stored = False
                async for event in sse_events(response):
                    if event.event == "status" and not stored:
                        async with other.transaction() as session:
                            await insert_chunks(session, body["id"], [("a", 0, "elsewhere\n")])
                        stored = True
                    if event.event == "log" and event.json()["content"] == "elsewhere\n":
                        break
        finally:
            await other.dispose()
            _go(settings, body["id"]).touch()
