"""Settings: every one documented in .env.example, bad values rejected clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import Settings, parse_tokens

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
