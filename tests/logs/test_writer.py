"""The log writer keeps output it failed to store, counts and logs the failure, and retries."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from sqlalchemy import text

from app.db import Database
from app.logs.writer import LogWriter
from app.metrics import Metrics
from app.services import create
from app.services.create import NewBuild

HAS_LZ4 = (
    "SELECT COALESCE(bool_or('lz4' = ANY(enumvals)), false) FROM pg_settings "
    "WHERE name = 'default_toast_compression'"
)


async def test_failed_flush_keeps_data_and_is_counted(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(database_url)
    metrics = Metrics()
    writer = LogWriter(db, metrics, flush_interval=60, chunk_max_bytes=64 * 1024)
    try:
        build_id = await _new_build(db)
        async with db.transaction() as session:
            await session.exec(text("ALTER TABLE build_log_chunks RENAME TO chunks_away"))  # type: ignore[call-overload]
        await writer.write(build_id, "a", 0, "first\n")
        with caplog.at_level(logging.ERROR):
            assert await writer.flush(build_id) is False
        assert "FAILED to store" in caplog.text
        assert metrics.log_store_failures._value.get() == 1.0
        await writer.write(build_id, "a", 0, "second\n")
        async with db.transaction() as session:
            await session.exec(text("ALTER TABLE chunks_away RENAME TO build_log_chunks"))  # type: ignore[call-overload]
        assert await writer.flush(build_id) is True
        async with db.read() as session:
            rows = (
                await session.exec(  # type: ignore[call-overload]
                    text("SELECT seq, content FROM build_log_chunks ORDER BY seq")
                )
            ).all()
        assert [tuple(r) for r in rows] == [(1, "first\nsecond\n")]
    finally:
        await db.dispose()


async def _new_build(db: Database) -> int:
    async with db.transaction() as session:
        build = await create.create_build(
            session,
            NewBuild(
                pipeline_id="p",
                triggered_by="t",
                workflow_yaml="jobs:\n  a:\n    steps:\n      - run: x\n",
                dispatch=False,
            ),
        )
    assert build.id is not None
    return build.id


async def _chunks(db: Database, build_id: int) -> list[tuple[int, str, int, str]]:
    async with db.read() as session:
        rows = (
            await session.exec(  # type: ignore[call-overload]
                text(
                    "SELECT seq, job_name, step_index, content FROM build_log_chunks "
                    f"WHERE build_id = {build_id} ORDER BY seq"
                )
            )
        ).all()
    return [tuple(r) for r in rows]


async def test_batches_stored_in_the_background_keep_order_and_seq(database_url: str) -> None:
    db = Database(database_url)
    metrics = Metrics()
    writer = LogWriter(db, metrics, flush_interval=60, chunk_max_bytes=1024, batch_bytes=4 * 1024)
    try:
        build_id = await _new_build(db)
        written: dict[tuple[str, int], list[str]] = {("a", 0): [], ("b", 1): []}
        for i in range(600):
            key = ("a", 0) if i % 7 else ("b", 1)
            piece = f"line {i} " + "é" * (i % 5) + "x" * (i % 90) + "\n"
            written[key].append(piece)
            await writer.write(build_id, key[0], key[1], piece)
            await asyncio.sleep(0)  # let a batch being stored interleave with the writes
        # Stored while writing (a write waits once two batches are held), not all at the end.
        total = sum(len(p) for pieces in written.values() for p in pieces)
        early = sum(len(c) for *_, c in await _chunks(db, build_id))
        assert early >= total - 2 * 4 * 1024
        await writer.flush(build_id)
        chunks = await _chunks(db, build_id)
        assert [seq for seq, *_ in chunks] == list(range(1, len(chunks) + 1))
        for key, pieces in written.items():
            stored = "".join(c for _, job, step, c in chunks if (job, step) == key)
            assert stored == "".join(pieces)
        assert all(len(c.encode()) <= 1024 for *_, c in chunks)
        assert metrics.log_chunks._value.get() == len(chunks)
    finally:
        await writer.stop()
        await db.dispose()


async def test_a_batch_failing_in_the_background_is_kept_in_order(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(database_url)
    writer = LogWriter(
        db,
        Metrics(),
        flush_interval=60,
        chunk_max_bytes=1024,
        batch_bytes=4 * 1024,
        block_seconds=3600,
    )
    entered, release = asyncio.Event(), asyncio.Event()

    async def connection_lost(*_: object) -> None:
        entered.set()
        await release.wait()
        raise ConnectionResetError("the database went away")

    try:
        build_id = await _new_build(db)
        monkeypatch.setattr(writer, "_store", connection_lost)
        first, second = "1" * 99 + "\n", "2" * 99 + "\n"
        # A full batch is stored in the background: the write does not wait for it (it would
        # wait block_seconds, an hour, if it did).
        await asyncio.wait_for(writer.write(build_id, "a", 0, first * 50), timeout=30)
        await entered.wait()
        # Written while that batch is being stored; then the store fails.
        await asyncio.wait_for(writer.write(build_id, "a", 0, second * 20), timeout=30)
        release.set()
        await asyncio.gather(*writer._background)
        monkeypatch.undo()
        assert await writer.flush(build_id) is True
        stored = "".join(c for *_, c in await _chunks(db, build_id))
        assert stored == first * 50 + second * 20
    finally:
        await writer.stop()
        await db.dispose()


async def test_chunk_content_is_stored_with_lz4_where_postgres_has_it(database_url: str) -> None:
    """Migration log_chunks_lz4: new chunk values are compressed with lz4 (cheaper than pglz for
    the database to write and read); the text reads back unchanged on both databases."""
    db = Database(database_url)
    writer = LogWriter(db, Metrics(), flush_interval=60, chunk_max_bytes=64 * 1024)
    try:
        build_id = await _new_build(db)
        content = "a compressible line of build output\n" * 1000
        await writer.write(build_id, "a", 0, content)
        assert await writer.flush(build_id) is True
        assert [c for *_, c in await _chunks(db, build_id)] == [content]
        if db.engine.dialect.name != "postgresql":
            return
        async with db.read() as session:
            has_lz4 = (await session.exec(text(HAS_LZ4))).scalar()  # type: ignore[call-overload]
            method = (
                await session.exec(  # type: ignore[call-overload]
                    text("SELECT pg_column_compression(content) FROM build_log_chunks")
                )
            ).scalar()
        assert method == ("lz4" if has_lz4 else "pglz")
    finally:
        await writer.stop()
        await db.dispose()


async def test_stop_while_the_interval_flush_is_storing_loses_nothing(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(database_url)
    writer = LogWriter(db, Metrics(), flush_interval=0.01, chunk_max_bytes=64 * 1024)
    entered, release = asyncio.Event(), asyncio.Event()
    store = writer._store

    async def slow_store(*args: Any) -> None:
        entered.set()
        await release.wait()
        await store(*args)

    try:
        build_id = await _new_build(db)
        monkeypatch.setattr(writer, "_store", slow_store)
        await writer.start()
        await writer.write(build_id, "a", 0, "stored by the interval flush\n")
        await entered.wait()
        # Shutdown while that flush is storing: it completes, it is not cancelled and lost.
        loop = writer._task
        assert loop is not None
        stopping = asyncio.create_task(writer.stop())
        await asyncio.wait({loop})  # stop() has cancelled the interval loop
        release.set()
        await asyncio.wait_for(stopping, timeout=30)
        assert [c for *_, c in await _chunks(db, build_id)] == ["stored by the interval flush\n"]
    finally:
        await writer.stop()
        await db.dispose()
