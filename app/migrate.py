"""Run Alembic migrations programmatically (used by the CLI and the tests)."""

from __future__ import annotations

import contextlib
import sqlite3

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from app.config import PROJECT_ROOT as ROOT


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)
    if database_url.startswith("sqlite"):
        _sqlite_wal(database_url)


def _sqlite_wal(database_url: str) -> None:
    """Put a SQLite file in WAL mode once, before any server opens it concurrently."""
    path = make_url(database_url).database
    if not path or path == ":memory:":
        return
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)
