"""Settings: every one documented in .env.example, bad values rejected clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.config import Settings, parse_tokens
from app.wiring import pool_size

ROOT = Path(__file__).resolve().parents[1]


def test_env_example_documents_every_setting() -> None:
    documented = {
        line.split("=", 1)[0].strip()
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#") and "=" in line
    }
    assert documented == {name.upper() for name in Settings.model_fields}


def test_env_example_values_are_the_defaults() -> None:
    values = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
    assert values.model_dump() == Settings(_env_file=None).model_dump()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("database_url", "mysql://x"),
        ("port", 0),
        ("runner", "docker"),
        ("api_tokens", "only-a-token"),
        ("api_tokens", "a:b:admin"),
        ("max_concurrent_builds", 0),
    ],
)
def test_bad_settings_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value, "_env_file": None})  # type: ignore[arg-type]


def test_tokens_parse() -> None:
    tokens = parse_tokens("frontend:abc:read, pipeline:def:write")
    assert [(t.name, t.token, t.role) for t in tokens] == [
        ("frontend", "abc", "read"),
        ("pipeline", "def", "write"),
    ]


def test_the_postgres_pool_keeps_a_connection_per_concurrent_build() -> None:
    """Unset (0), Postgres keeps one pooled connection per build a replica runs at once, 20 at
    least and 50 at most; DB_POOL_SIZE wins; SQLite keeps the database module's default."""
    pg = "postgresql+asyncpg://ci@db/ci"

    def size(**values: Any) -> int | None:
        return pool_size(Settings(_env_file=None, **values))

    assert size(database_url=pg) == 20
    assert size(database_url=pg, max_concurrent_builds=35) == 35
    assert size(database_url=pg, max_concurrent_builds=500) == 50
    assert size(database_url=pg, max_concurrent_builds=50, db_pool_size=7) == 7
    assert size(database_url="sqlite+aiosqlite:///x.db", max_concurrent_builds=50) is None
