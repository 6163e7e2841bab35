"""Many SSE subscribers connecting at once, more than the database pool has connections.

The pool is made tiny (2 kept + 2 overflow) with a short checkout timeout, so streams that each
held a pool connection for their replay would time out in the pool (a 500, or a stream closed
before its `end`). They must all get their whole replay, then follow live to `end`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from app.config import Settings
from app.main import create_app
from tests.support import (
    create,
    sse_events,
    uvicorn_server,
    wait_for_build,
    wait_until,
    workflow,
)

SUBSCRIBERS = 200
LINES = 20_000

STEP = workflow(
    f"""
    jobs:
      a:
        steps:
          - run: |
              seq 1 {LINES}
              while [ ! -e ../go ]; do sleep 0.02; done
              echo done
    """
)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Small chunks, so the replay is a few hundred rows read in several batches.
    return {"db_pool_size": 2, "db_pool_timeout_seconds": 0.5, "log_chunk_max_bytes": 1024}


async def _subscribe(
    client: httpx.AsyncClient, url: str, replayed: asyncio.Queue[int]
) -> tuple[int, list[int], list[str], Any]:
    """Follow the stream to `end`; report on `replayed` once the first status event (sent
    after the replay) arrived. Returns the HTTP status, the seqs, the lines and the end data."""
    seqs: list[int] = []
    lines: list[str] = []
    told = False
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                return response.status_code, seqs, lines, None
            async for event in sse_events(response):
                if event.event == "log":
                    seqs.append(int(event.id or 0))
                    lines.extend(event.json()["content"].splitlines())
                elif event.event == "status" and not told:
                    told = True
                    await replayed.put(200)
                elif event.event == "end":
                    return 200, seqs, lines, event.json()
        return 200, seqs, lines, None
    except httpx.HTTPError as exc:  # the stream closed early
        return 0, seqs, lines, repr(exc)
    finally:
        if not told:  # reported at once, so the test fails without waiting for the others
            await replayed.put(0)


async def test_more_subscribers_than_pool_connections_all_replay_and_end(
    settings: Settings,
) -> None:
    app = create_app(settings)
    chunk_reads: list[str] = []

    def executed(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "build_log_chunks" in statement:
            chunk_reads.append(statement)

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with (
        uvicorn_server(app, lifespan="on") as live_url,
        httpx.AsyncClient(base_url=f"{live_url}/api/v1", timeout=120, limits=limits) as client,
    ):
        body = await create(client, STEP)
        build_id = body["id"]
        url = f"/builds/{build_id}/logs/stream"
        # The replay must hold every line before the storm: wait until the last one is stored.
        expected_replay = [str(i) for i in range(1, LINES + 1)]

        async def stored() -> bool:
            text = (await client.get(f"/builds/{build_id}/logs/raw")).text
            return text.splitlines() == expected_replay

        await wait_until(stored, "the replay to be stored", timeout=60)
        replayed: asyncio.Queue[int] = asyncio.Queue()
        engine = app.state.services.db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", executed)
        try:
            tasks = [
                asyncio.create_task(_subscribe(client, url, replayed)) for _ in range(SUBSCRIBERS)
            ]
            firsts = [await asyncio.wait_for(replayed.get(), 120) for _ in range(SUBSCRIBERS)]
        finally:
            event.remove(engine, "before_cursor_execute", executed)
        assert firsts == [200] * SUBSCRIBERS
        # The streams that connect while a replay read waits for its turn share it (one read
        # each made the storm's last streams wait for 200 reads, one after another).
        assert 0 < len(chunk_reads) <= SUBSCRIBERS // 4, len(chunk_reads)
        (Path(settings.workspace_root) / str(build_id) / "go").touch()
        results = await asyncio.gather(*tasks)
        await wait_for_build(client, build_id)
    for status, seqs, lines, end in results:
        assert status == 200
        assert end == {"status": "success"}
        assert lines == [*expected_replay, "done"]
        assert seqs == list(range(1, len(seqs) + 1))
