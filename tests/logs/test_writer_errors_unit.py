"""Which failures the log writer treats as the data's (stored piece by piece, never retried as
is) and which as transient (kept and retried): the drivers' own errors too, as
Database.commit_alone raises them without SQLAlchemy around it."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest

from app.logs.writer import is_data_error


@pytest.mark.parametrize(
    "error",
    [
        sqlite3.IntegrityError("UNIQUE constraint failed"),
        sqlite3.DataError("string or blob too big"),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.DataError("invalid input"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogate"),
    ],
)
def test_refused_data(error: BaseException) -> None:
    assert is_data_error(error)


@pytest.mark.parametrize(
    "error",
    [
        sqlite3.OperationalError("database is locked"),
        ConnectionResetError("connection lost"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        TimeoutError(),
    ],
)
def test_transient(error: BaseException) -> None:
    assert not is_data_error(error)
