"""5. ListBuilds: 100k builds across 100 pipelines (inserted directly with SQL), then
GET /api/v1/builds?pipeline_id=...&page=... (random pipeline, pages 1-10, size 20) over one
keep-alive connection; p50. Baseline: the same statement (the page with its total) run directly
through asyncpg / sqlite3."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from bench._common import Ctx, Database, Result, client, median, percentile, serve

NAME = "list_builds"
BACKENDS = ("postgres", "sqlite")
PIPELINES = 100
SIZE = 20
COLUMNS = (
    "pipeline_id",
    "number",
    "triggered_by",
    "status",
    "variables",
    "created_at",
    "started_at",
    "finished_at",
    "last_log_seq",
)
# What app/services/listing.py runs: one statement, the total as an uncorrelated subquery on
# each row (the count alone only for a page past the end, which this benchmark never asks for).
PAGE_SQL = (
    "SELECT (SELECT count(*) FROM builds WHERE pipeline_id = $1) AS total, id, pipeline_id, "
    "number, triggered_by, status, commit_sha, branch, repo_url, variables, error, created_at, "
    "started_at, finished_at, cancel_requested_at, retry_of, cancelled_by, last_log_seq, "
    "event_name, concurrency_group, waiting_reason "
    "FROM builds WHERE pipeline_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3"
)


def rows(total: int) -> list[tuple[object, ...]]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(total):
        at = start + timedelta(seconds=i * 30)
        out.append(
            (
                f"pipe-{i % PIPELINES:03d}",
                i // PIPELINES + 1,
                "bench",
                ("success", "failed", "cancelled")[i % 7 % 3],
                "{}",
                at,
                at,
                at + timedelta(seconds=20),
                0,
            )
        )
    return out


async def insert(db: Database, total: int) -> None:
    data = rows(total)
    if db.backend == "postgres":
        conn = await asyncpg.connect(db.raw)
        try:
            await conn.copy_records_to_table("builds", records=data, columns=COLUMNS)
            # Autovacuum would have run on a real table: index-only scans need the visibility map.
            await conn.execute("VACUUM ANALYZE builds")
        finally:
            await conn.close()
        return

    def sqlite_insert() -> None:
        stamp = "%Y-%m-%d %H:%M:%S.%f"
        marks = ", ".join("?" * len(COLUMNS))
        with sqlite3.connect(db.raw) as conn:
            conn.executemany(
                f"INSERT INTO builds ({', '.join(COLUMNS)}) VALUES ({marks})",
                [
                    (*r[:5], r[5].strftime(stamp), r[6].strftime(stamp), r[7].strftime(stamp), r[8])  # type: ignore[attr-defined]
                    for r in data
                ],
            )
            conn.execute("ANALYZE")

    await asyncio.to_thread(sqlite_insert)


async def direct(db: Database, queries: list[tuple[str, int]]) -> list[float]:
    times = []
    if db.backend == "postgres":
        conn = await asyncpg.connect(db.raw)
        try:
            for pipeline, page in queries:
                t0 = time.perf_counter()
                await conn.fetch(PAGE_SQL, pipeline, SIZE, (page - 1) * SIZE)
                times.append(time.perf_counter() - t0)
        finally:
            await conn.close()
        return times

    def sqlite_queries() -> list[float]:
        with sqlite3.connect(db.raw) as conn:
            for pipeline, page in queries:
                t0 = time.perf_counter()
                conn.execute(  # ?N: SQLite's numbered parameters, as $N on Postgres
                    PAGE_SQL.replace("$", "?"), (pipeline, SIZE, (page - 1) * SIZE)
                ).fetchall()
                times.append(time.perf_counter() - t0)
        return times

    return await asyncio.to_thread(sqlite_queries)


async def one_size(ctx: Ctx, backend: str, total: int, requests: int, target: bool) -> None:
    rng = random.Random(42)
    pages = max(1, min(10, total // PIPELINES // SIZE))
    queries = [
        (f"pipe-{rng.randrange(PIPELINES):03d}", rng.randint(1, pages)) for _ in range(requests)
    ]
    async with serve(backend) as (db, (server,), _tmp):
        await insert(db, total)
        async with client(server.base, connections=1) as http:
            for pipeline, page in queries[:20]:  # warm-up
                (
                    await http.get("/api/v1/builds", params={"pipeline_id": pipeline, "page": page})
                ).raise_for_status()
            times = []
            for pipeline, page in queries:
                t0 = time.perf_counter()
                response = await http.get(
                    "/api/v1/builds", params={"pipeline_id": pipeline, "page": page, "size": SIZE}
                )
                times.append(time.perf_counter() - t0)
                response.raise_for_status()
                body = response.json()
                if body["total"] != total // PIPELINES or len(body["items"]) != SIZE:
                    raise RuntimeError(
                        f"unexpected page: total {body['total']}, {len(body['items'])} items"
                    )
        await direct(db, queries[:20])  # warm-up
        base = await direct(db, queries)
    p50, b50 = median(times) * 1000, median(base) * 1000
    label = f"{total // 1000}k" if total < 1_000_000 else f"{total // 1_000_000}M"
    ctx.add(
        Result(
            NAME,
            backend,
            f"GET /builds p50 ({label} builds, {requests} requests)"
            + ("" if target else " (scaling)"),
            p50,
            "ms",
            b50,
            "same SQL direct",
            "<= 15 ms" if target else "",
            p50 <= 15 if target else None,
            note=f"p99 {percentile(times, 99) * 1000:.1f} ms",
        )
    )


async def run(ctx: Ctx, backend: str) -> None:
    """Sizes 10k and 100k builds (1M with --large: its insert alone takes minutes here)."""
    requests = 100 if ctx.quick else 500
    sizes = [10_000, 20_000] if ctx.quick else [10_000, 100_000]
    if ctx.large:
        sizes.append(1_000_000)
    for total in sizes:
        await one_size(ctx, backend, total, requests, target=total == sizes[1])
