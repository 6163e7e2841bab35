"""2. Log ingest: one step writes 100 MB of 80-byte lines; POST until finished with every byte
stored, against a bulk load of the same file (`psql \\copy` on Postgres, `sqlite3 .import` on
SQLite). Also the serve process's peak RSS (VmHWM)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import asyncpg

from bench._common import (
    Ctx,
    Database,
    Result,
    client,
    create_build,
    parse_ts,
    require_success,
    serve,
    wait_finished,
)

NAME = "log_ingest"
BACKENDS = ("postgres", "sqlite")
# 79 characters plus the newline: 80-byte lines, 100 MiB is exactly 1,310,720 of them.
LINE = "ci-executor log ingest benchmark line, 80 bytes with its newline: abcdefghijklm"
assert len(LINE) == 79


def command(size: str) -> str:
    return f'yes "{LINE}" | head -c {size}'


# Steps run under `bash -eo pipefail`, where `yes` dying of SIGPIPE would fail the step.
STEP = "set +o pipefail; {}"


async def stored_bytes(db: Database, build_id: int) -> int:
    sql = "SELECT COALESCE(SUM(LENGTH(content)), 0) FROM build_log_chunks WHERE build_id = $1"
    if db.backend == "postgres":
        conn = await asyncpg.connect(db.raw)
        try:
            return int(await conn.fetchval(sql, build_id))
        finally:
            await conn.close()

    def query() -> int:
        with sqlite3.connect(db.raw) as conn:
            return int(conn.execute(sql.replace("$1", "?"), (build_id,)).fetchone()[0])

    return await asyncio.to_thread(query)


async def baseline(db: Database, tmp: Path, size: str) -> tuple[float, str]:
    path = tmp / "lines.txt"
    subprocess.run(["bash", "-c", f"{command(size)} > {path}"], check=True)
    if db.backend == "postgres":
        conn = await asyncpg.connect(db.raw)
        await conn.execute("CREATE TABLE bench_lines (line text)")
        await conn.close()
        argv = [
            "psql",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            db.raw,
            "-c",
            f"\\copy bench_lines FROM '{path}'",
        ]
        label = "psql \\copy"
    elif shutil.which("sqlite3"):
        base = tmp / "baseline.db"
        argv = [
            "sqlite3",
            str(base),
            "CREATE TABLE bench_lines (line text);",
            ".mode csv",
            f".import {path} bench_lines",
        ]
        label = "sqlite3 .import"
    else:
        return await asyncio.to_thread(_executemany, tmp / "baseline.db", path), "executemany 64KiB"
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start, label


def _executemany(db_path: Path, path: Path) -> float:
    start = time.perf_counter()
    with sqlite3.connect(db_path) as conn, open(path) as src:
        conn.execute("CREATE TABLE bench_lines (line text)")
        conn.executemany(
            "INSERT INTO bench_lines VALUES (?)", iter(lambda: (src.read(65536),), ("",))
        )
    return time.perf_counter() - start


async def run(ctx: Ctx, backend: str) -> None:
    size_mb = 10 if ctx.quick else 100
    size, expected = f"{size_mb}M", size_mb * 1024 * 1024
    async with serve(backend) as (db, (server,), tmp):
        async with client(server.base) as http:
            sent = time.time()
            build = await create_build(
                http, f"jobs:\n  bench:\n    steps:\n      - run: '{STEP.format(command(size))}'\n"
            )
            build = await wait_finished(http, build["id"], interval=0.1)
            require_success(build)
            elapsed = parse_ts(build["finished_at"]) - sent
            stored = await stored_bytes(db, build["id"])
            if stored != expected:
                # Not all stored when the build said finished: wait and count that time too.
                deadline = time.monotonic() + 60
                while stored != expected and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                    stored = await stored_bytes(db, build["id"])
                elapsed = time.time() - sent
            rss = server.peak_rss_mb()
        base, label = await baseline(db, tmp, size)
    note = "" if stored == expected else f"STORED {stored} of {expected} bytes"
    ctx.add(
        Result(
            NAME,
            backend,
            f"{size_mb} MiB POST->finished+stored",
            elapsed,
            "s",
            base,
            label,
            "<= psql" if backend == "postgres" else "",
            (elapsed <= base and not note) if backend == "postgres" else None,
            note or f"{stored} bytes stored",
        )
    )
    ctx.add(
        Result(
            NAME, backend, "serve peak RSS (VmHWM)", rss, "MB", target="< 200 MB", passed=rss < 200
        )
    )
