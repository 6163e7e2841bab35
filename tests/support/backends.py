"""Which databases the suite runs on: `TEST_BACKENDS` (default `sqlite,postgres`).

`TEST_BACKENDS=sqlite` lets a contributor without Postgres run the SQLite half: every
`backend`-parametrised test runs on SQLite only, and tests that need Postgres by nature (replicas
sharing a database) are skipped with the reason."""

from __future__ import annotations

import os

import pytest

ALL_BACKENDS = ("sqlite", "postgres")


def enabled_backends() -> list[str]:
    raw = os.environ.get("TEST_BACKENDS", ",".join(ALL_BACKENDS))
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ALL_BACKENDS))
    if unknown or not names:
        raise pytest.UsageError(
            f"TEST_BACKENDS={raw!r}: expected a comma-separated subset of {','.join(ALL_BACKENDS)}"
        )
    return [name for name in ALL_BACKENDS if name in names]


def skip_unless_enabled(backend: str) -> None:
    """Skip the running test when its backend is left out by TEST_BACKENDS."""
    if backend not in enabled_backends():
        pytest.skip(f"TEST_BACKENDS={os.environ.get('TEST_BACKENDS', '')} leaves out {backend}")
