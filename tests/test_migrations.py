"""The migrations build the schema on both databases, reverse cleanly, and match the models."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import app.models  # noqa: F401
from app.migrate import downgrade, upgrade
from tests.conftest import BACKENDS, _pg_admin, _pg_url


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
        return
    name = f"ci_mig_{tmp_path.name[-8:].lower().replace('-', '_')}"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'))
    yield _pg_url(name)
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _inspect(url: str) -> tuple[list[str], list[Any]]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:

        def work(sync_conn: Any) -> tuple[list[str], list[Any]]:
            tables = sorted(inspect(sync_conn).get_table_names())
            context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
            return tables, compare_metadata(context, SQLModel.metadata)

        result = await conn.run_sync(work)
    await engine.dispose()
    return result


def test_upgrade_matches_models_and_downgrade_is_clean(empty_url: str) -> None:
    upgrade(empty_url)
    tables, diff = asyncio.run(_inspect(empty_url))
    assert set(SQLModel.metadata.tables) <= set(tables)
    assert diff == [], f"models and migrations disagree: {diff}"
    downgrade(empty_url)
    tables, _ = asyncio.run(_inspect(empty_url))
    assert tables == ["alembic_version"] or tables == []
    upgrade(empty_url)  # and back up again
    tables, diff = asyncio.run(_inspect(empty_url))
    assert diff == []


def test_cache_digest_keeps_uploaded_archives(empty_url: str) -> None:
    """Migration cache_digest: an archive uploaded but not yet finalized (a digest, still
    `reserved`) becomes `uploaded`, so its finalize still succeeds; a bare reservation stays
    `reserved`. Downgrading puts both back to `reserved`."""
    upgrade(empty_url, "log_chunks_lz4")
    now = datetime.now(UTC)

    async def run(sql: str, **params: Any) -> list[Any]:
        engine = create_async_engine(empty_url)
        async with engine.begin() as conn:
            result = await conn.execute(text(sql), params)
            rows = list(result.all()) if result.returns_rows else []
        await engine.dispose()
        return rows

    insert = (
        "INSERT INTO action_caches (pipeline_id, scope, key, version, status, size, sha256, "
        "created_at, last_used_at) VALUES ('p', 'main', :key, 'v', 'reserved', :size, :sha, "
        ":now, :now)"
    )
    asyncio.run(run(insert, key="done", size=6, sha="a" * 64, now=now))
    asyncio.run(run(insert, key="open", size=0, sha=None, now=now))
    statuses = "SELECT key, status FROM action_caches ORDER BY key"
    upgrade(empty_url)
    assert asyncio.run(run(statuses)) == [("done", "uploaded"), ("open", "reserved")]
    downgrade(empty_url, "log_chunks_lz4")
    assert asyncio.run(run(statuses)) == [("done", "reserved"), ("open", "reserved")]
