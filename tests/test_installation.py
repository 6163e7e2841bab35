"""The database's installation id: made once by the migrations, new for a new database."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.db import Database
from app.installation import read_installation_id
from app.migrate import upgrade


async def _read(url: str) -> str | None:
    db = Database(url)
    try:
        return await read_installation_id(db)
    finally:
        await db.dispose()


async def test_installation_id_is_stable_and_new_per_database(
    database_url: str, tmp_path: Path
) -> None:
    first = await _read(database_url)
    assert first is not None
    assert len(first) == 32
    assert await _read(database_url) == first
    fresh = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    await asyncio.to_thread(upgrade, fresh)
    other = await _read(fresh)
    assert other is not None
    assert other != first


async def test_a_database_without_the_table_gives_none(tmp_path: Path) -> None:
    assert await _read(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}") is None
