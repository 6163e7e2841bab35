"""2. Log ingest and download: one step writes 100 MB of 80-byte lines; POST until finished with
every byte stored, against a bulk load of the same file (`psql \\copy` on Postgres, `sqlite3
.import` on SQLite), and the serve process's peak RSS (VmHWM). Then the whole log downloaded from
`/logs/raw` against the database's own client reading the same rows (`psql \\copy (...) TO
STDOUT`). Sizes 10 / 100 MB (1,000 MB with --large) show how time and RSS grow.

Two info rows split the service's time on the same bytes: what a build costs with no output
(POST to finished of the same step writing nothing), and, on Postgres, the floor: the same
bytes in the same rows (64 KiB chunks, 4 MiB per transaction, seq range allocated by UPDATE,
COPY binary) sent from Python with asyncpg straight to a copy of build_log_chunks, no service.
The note of the POST row gives the serve process's CPU seconds, less noisy than wall time on a
shared machine."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
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
# The elapsed time is the server's finished_at: polling more often only adds load (each poll
# is a request the serve process answers on the cores the step and Postgres share).
POLL_SECONDS = 0.25
CHUNK = 64 * 1024  # the service's default log_chunk_max_bytes
BATCH = 4 * 1024 * 1024  # app/logs/writer.py BATCH_BYTES


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


async def download(base: str, build_id: int) -> tuple[float, int]:
    """GET /logs/raw to the end, counting bytes; returns (seconds, bytes). With curl when it is
    installed: a C client, as the baseline's psql is. A Python client (httpx, the fallback)
    decoding 100 MB of chunked HTTP costs more CPU than the server sending it, on the same two
    cores: 0.7-1.4 s against curl's 0.3-0.7 s for the same 100 MiB download (RESULTS.md)."""
    url = f"{base}/api/v1/builds/{build_id}/logs/raw"
    if shutil.which("curl"):
        start = time.perf_counter()
        done = await asyncio.to_thread(
            subprocess.run,
            ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}", url],
            check=True,
            capture_output=True,
            text=True,
        )
        return time.perf_counter() - start, int(float(done.stdout.strip() or 0))
    size = 0
    async with client(base) as http:
        start = time.perf_counter()
        async with http.stream("GET", f"/api/v1/builds/{build_id}/logs/raw") as response:
            response.raise_for_status()
            async for data in response.aiter_raw(1 << 20):
                size += len(data)
        return time.perf_counter() - start, size


async def copy_floor(db: Database, size_mb: int) -> float:
    """The same bytes stored the way the writer stores them, from Python with no service: the
    least the service's store can cost (see the module doc)."""
    line = (LINE + "\n") * (CHUNK // (len(LINE) + 1))
    chunks = -(-size_mb * 1024 * 1024 // len(line))
    per_txn = BATCH // CHUNK
    now = datetime.now(UTC)
    conn = await asyncpg.connect(db.raw)
    try:
        await conn.execute(
            "CREATE TABLE bench_floor (LIKE build_log_chunks INCLUDING ALL);"
            "CREATE TABLE bench_floor_seq (id int PRIMARY KEY, last int NOT NULL);"
            "INSERT INTO bench_floor_seq VALUES (1, 0)"
        )
        start = time.perf_counter()
        for first in range(0, chunks, per_txn):
            count = min(per_txn, chunks - first)
            async with conn.transaction():
                last = await conn.fetchval(
                    "UPDATE bench_floor_seq SET last = last + $1 WHERE id = 1 RETURNING last", count
                )
                await conn.copy_records_to_table(
                    "bench_floor",
                    records=[
                        (1, last - count + i, "bench", 0, line, now) for i in range(1, count + 1)
                    ],
                    columns=("build_id", "seq", "job_name", "step_index", "content", "created_at"),
                )
        return time.perf_counter() - start
    finally:
        await conn.close()


async def empty_build(base: str) -> float:
    """POST to finished of the same step writing nothing: the build's own cost."""
    async with client(base) as http:
        sent = time.time()
        build = await create_build(
            http, f"jobs:\n  bench:\n    steps:\n      - run: '{STEP.format(command('0'))}'\n"
        )
        build = await wait_finished(http, build["id"], interval=POLL_SECONDS, timeout=600)
        require_success(build)
        return parse_ts(build["finished_at"]) - sent


def download_baseline(db: Database, build_id: int) -> tuple[float, str]:
    """The same rows read by the database's own client, output thrown away."""
    query = f"SELECT content FROM build_log_chunks WHERE build_id = {build_id} ORDER BY seq"
    if db.backend == "postgres":
        argv = ["psql", "-q", "-v", "ON_ERROR_STOP=1", db.raw, "-c", f"\\copy ({query}) TO STDOUT"]
        label = "psql \\copy TO STDOUT"
    elif shutil.which("sqlite3"):
        argv, label = ["sqlite3", db.raw, query], "sqlite3 SELECT"
    else:
        return 0.0, "no sqlite3 CLI"
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, label


async def one_size(ctx: Ctx, backend: str, size_mb: int, target: bool) -> None:
    size, expected = f"{size_mb}M", size_mb * 1024 * 1024
    async with serve(backend) as (db, (server,), tmp):
        async with client(server.base) as http:
            cpu_before = cpu_seconds(server.pid)
            sent = time.time()
            build = await create_build(
                http, f"jobs:\n  bench:\n    steps:\n      - run: '{STEP.format(command(size))}'\n"
            )
            build = await wait_finished(http, build["id"], interval=POLL_SECONDS, timeout=3600)
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
            cpu = cpu_seconds(server.pid) - cpu_before
        await download(server.base, build["id"])  # warm the page cache for both readers
        got, got_bytes = await download(server.base, build["id"])
        rss_after = server.peak_rss_mb()
        dl_base, dl_label = await asyncio.to_thread(download_baseline, db, build["id"])
        fixed = await empty_build(server.base) if target else None
        floor = await copy_floor(db, size_mb) if target and db.backend == "postgres" else None
        base, label = await baseline(db, tmp, size)
    note = "" if stored == expected else f"STORED {stored} of {expected} bytes"
    pg = backend == "postgres"
    ctx.add(
        Result(
            NAME,
            backend,
            f"{size_mb} MiB POST->finished+stored" + ("" if target else " (scaling)"),
            elapsed,
            "s",
            base,
            label,
            "<= psql" if pg and target else "",
            (elapsed <= base and not note) if pg and target else None,
            note or f"{stored} bytes stored, serve CPU {cpu:.2f} s",
        )
    )
    if fixed is not None:
        ctx.add(
            Result(
                NAME,
                backend,
                "info: the same build with no output, POST->finished",
                fixed,
                "s",
                base,
                label,
                note="the build's own cost, in the row above too",
            )
        )
    if floor is not None:
        ctx.add(
            Result(
                NAME,
                backend,
                f"info: floor, the same {size_mb} MiB COPYed from Python, no service",
                floor,
                "s",
                base,
                label,
                note="64 KiB rows, 4 MiB per transaction, as the writer stores them",
            )
        )
    ctx.add(
        Result(
            NAME,
            backend,
            f"{size_mb} MiB: serve peak RSS (VmHWM) while storing",
            rss,
            "MB",
            target="< 200 MB",
            passed=rss < 200,
        )
    )
    dl_note = "" if got_bytes == expected else f"DOWNLOADED {got_bytes} of {expected} bytes"
    ctx.add(
        Result(
            NAME,
            backend,
            f"{size_mb} MiB GET /logs/raw" + ("" if target else " (scaling)"),
            got,
            "s",
            dl_base or None,
            dl_label,
            "<= 1.5x" if pg and target else "",
            (got <= 1.5 * dl_base and not dl_note) if pg and target else None,
            dl_note or f"peak RSS after download {rss_after:.0f} MB",
        )
    )


async def run(ctx: Ctx, backend: str) -> None:
    sizes = [10] if ctx.quick else [10, 100]
    if ctx.large:
        sizes.append(1000)
    for size_mb in sizes:
        await one_size(ctx, backend, size_mb, target=size_mb == (10 if ctx.quick else 100))
