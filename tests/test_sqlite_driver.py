"""The SQLite driver adaptation (app/sqlite_driver.py): one trip to aiosqlite's thread per
statement, with what SQLAlchemy reads from a cursor unchanged. SQLite-only by nature."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import exc, text

from app.db import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    async with database.transaction() as session:
        await session.exec(  # type: ignore[call-overload]
            text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, n INTEGER)")
        )
    yield database
    await database.dispose()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The calls made on aiosqlite connections' threads, by name."""
    seen: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return seen


async def test_one_trip_per_statement(db: Database, trips: list[str]) -> None:
    """SQLAlchemy's own adaptation made four (cursor, execute, fetchall, close)."""
    async with db.transaction() as session:
        await session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        trips.clear()
        rows = (await session.exec(text("SELECT 1, 'a'"))).all()  # type: ignore[call-overload]
        assert [tuple(r) for r in rows] == [(1, "a")]
        assert trips == ["_run"]
        trips.clear()
        await session.exec(text("INSERT INTO t (name, n) VALUES ('x', 1)"))  # type: ignore[call-overload]
        assert trips == ["_run"]


async def test_what_sqlalchemy_reads_from_the_cursor(db: Database) -> None:
    async with db.transaction() as session:
        inserted = await session.exec(  # type: ignore[call-overload]
            text("INSERT INTO t (name, n) VALUES ('a', 1), ('b', 2) RETURNING id, name")
        )
        assert [tuple(r) for r in inserted.all()] == [(1, "a"), (2, "b")]
        one = await session.exec(text("INSERT INTO t (name, n) VALUES ('c', 3)"))  # type: ignore[call-overload]
        assert one.lastrowid == 3
        # executemany: a list of parameter sets.
        await session.exec(  # type: ignore[call-overload]
            text("INSERT INTO t (name, n) VALUES (:name, :n)"),
            params=[{"name": "d", "n": 4}, {"name": "e", "n": 5}],
        )
        updated = await session.exec(text("UPDATE t SET n = n * 10 WHERE n > 2"))  # type: ignore[call-overload]
        assert updated.rowcount == 3
        empty = await session.exec(text("SELECT name FROM t WHERE n < 0"))  # type: ignore[call-overload]
        assert empty.all() == []
    async with db.read() as session:
        result = await session.exec(text("SELECT name, n FROM t ORDER BY id"))  # type: ignore[call-overload]
        assert list(result.keys()) == ["name", "n"]
        assert [tuple(r) for r in result.all()] == [
            ("a", 1),
            ("b", 2),
            ("c", 30),
            ("d", 40),
            ("e", 50),
        ]


async def _insert_twice(db: Database) -> None:
    async with db.transaction() as session:
        await session.exec(text("INSERT INTO t (name) VALUES ('same')"))  # type: ignore[call-overload]
        await session.exec(text("INSERT INTO t (name) VALUES ('same')"))  # type: ignore[call-overload]


async def _read_missing(db: Database) -> None:
    async with db.read() as session:
        await session.exec(text("SELECT * FROM missing"))  # type: ignore[call-overload]


async def test_errors_are_sqlalchemys_and_the_connection_goes_on(db: Database) -> None:
    with pytest.raises(exc.IntegrityError):
        await _insert_twice(db)
    with pytest.raises(exc.OperationalError, match="no such table"):
        await _read_missing(db)
    async with db.read() as session:
        count = await session.exec(text("SELECT count(*) FROM t"))  # type: ignore[call-overload]
        assert count.scalar_one() == 0  # the failed transaction rolled back whole
