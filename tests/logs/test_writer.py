"""The log writer keeps output it failed to store, counts and logs the failure, and retries."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text

from app.db import Database
from app.logs.writer import LogWriter
from app.metrics import Metrics
from app.services import builds
from app.services.builds import NewBuild


async def test_failed_flush_keeps_data_and_is_counted(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(database_url)
    metrics = Metrics()
    writer = LogWriter(db, metrics, flush_interval=60, chunk_max_bytes=64 * 1024)
    try:
        async with db.transaction() as session:
            build = await builds.create_build(
                session,
                NewBuild(
                    pipeline_id="p",
                    triggered_by="t",
                    workflow_yaml="jobs:\n  a:\n    steps:\n      - run: x\n",
                    dispatch=False,
                ),
            )
        assert build.id is not None
        async with db.transaction() as session:
            await session.exec(text("ALTER TABLE build_log_chunks RENAME TO chunks_away"))  # type: ignore[call-overload]
        await writer.write(build.id, "a", 0, "first\n")
        with caplog.at_level(logging.ERROR):
            assert await writer.flush(build.id) is False
        assert "FAILED to store" in caplog.text
        assert metrics.log_store_failures._value.get() == 1.0
        await writer.write(build.id, "a", 0, "second\n")
        async with db.transaction() as session:
            await session.exec(text("ALTER TABLE chunks_away RENAME TO build_log_chunks"))  # type: ignore[call-overload]
        assert await writer.flush(build.id) is True
        async with db.read() as session:
            rows = (
                await session.exec(  # type: ignore[call-overload]
                    text("SELECT seq, content FROM build_log_chunks ORDER BY seq")
                )
            ).all()
        assert [tuple(r) for r in rows] == [(1, "first\nsecond\n")]
    finally:
        await db.dispose()
