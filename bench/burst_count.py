"""`python -m bench.burst_count [sqlite] [postgres]`: deterministic figures for the 50-build burst.

In one process (the app under asgi-lifespan, httpx's ASGI transport, no uvicorn): 50 POSTs at
once of the dispatch_latency one-step build with MAX_CONCURRENT_BUILDS=50, then each build
polled until finished. Counted from the first POST to the last build's end: the transactions
committed that wrote something, and the statements executed (the polls' included), per build;
and the process's main-thread CPU per build (the loop and the client together). Set
BENCH_APP_PATH to a copy of `app/` to count another version (as bench/_serve.py does).
"""

from __future__ import annotations

import os
import sys

if os.environ.get("BENCH_APP_PATH"):
    sys.path.insert(0, os.environ["BENCH_APP_PATH"])

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import event

from app.config import Settings
from app.main import create_app
from bench._common import fresh_database, migrate
from bench.dispatch_latency import YAML

COUNT = 50


def _counting(engine: Any) -> dict[str, int]:
    counts = {"commits": 0, "statements": 0}
    open_: dict[int, list[str]] = {}

    def executed(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        counts["statements"] += 1
        key = id(conn.connection.dbapi_connection)
        open_.setdefault(key, []).append(statement.split()[0].upper())

    def committed(conn: Any) -> None:
        words = open_.pop(id(conn.connection.dbapi_connection), [])
        if any(w in ("INSERT", "UPDATE", "DELETE", "WITH") for w in words):
            counts["commits"] += 1

    event.listen(engine, "before_cursor_execute", executed)
    event.listen(engine, "commit", committed)
    return counts


async def burst(backend: str) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="ci-burst-count-"))
    async with fresh_database(backend, tmp) as db:
        await asyncio.to_thread(migrate, db)
        settings = Settings(
            database_url=db.url,
            workspace_root=tmp / "ws",
            queue_url="memory://",
            api_tokens="",
            max_concurrent_builds=COUNT,
            _env_file=None,
        )
        application = create_app(settings)
        async with LifespanManager(application, startup_timeout=30, shutdown_timeout=60):
            counts = _counting(application.state.services.db.engine.sync_engine)
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as c:

                async def post() -> int:
                    body = {"pipeline_id": "p", "triggered_by": "bench", "workflow_yaml": YAML}
                    response = await c.post("/builds", json=body)
                    response.raise_for_status()
                    return int(response.json()["id"])

                await post()  # warm-up
                await asyncio.sleep(1)
                counts.update(commits=0, statements=0)
                cpu0 = time.thread_time()
                ids = await asyncio.gather(*(post() for _ in range(COUNT)))
                for build_id in ids:
                    while (await c.get(f"/builds/{build_id}")).json()["status"] in (
                        "queued",
                        "running",
                    ):
                        await asyncio.sleep(0.05)
                cpu = (time.thread_time() - cpu0) * 1000 / COUNT
    return (
        f"{backend}: write transactions per build {counts['commits'] / COUNT:.2f}, statements "
        f"per build {counts['statements'] / COUNT:.1f} (polls included), main-thread CPU per "
        f"build {cpu:.1f} ms"
    )


def main() -> None:
    for backend in sys.argv[1:] or ["sqlite", "postgres"]:
        print(asyncio.run(burst(backend)), flush=True)


if __name__ == "__main__":
    main()
