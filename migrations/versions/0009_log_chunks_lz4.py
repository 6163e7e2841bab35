"""log chunk content compressed with lz4 on Postgres (where the server has it)

A chunk (up to 64 KiB) is TOASTed and compressed; with the default pglz, compressing 100 MB of
step output cost the database backend about three times what lz4 does (bench/log_ingest.py; a
COPY of the same rows from Python: ~0.6 s with pglz against ~0.2 s with lz4), and lz4 also
decompresses faster for the raw download. Only new values use it; existing rows stay readable
as they are (Postgres records the method per value). A server built without lz4 keeps pglz.
SQLite stores text uncompressed: nothing to do there.

Revision ID: log_chunks_lz4
Revises: concurrency
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "log_chunks_lz4"
down_revision: str | None = "concurrency"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Postgres 14+ lists lz4 among this setting's values only when it was built with lz4.
HAS_LZ4 = sa.text(
    "SELECT COALESCE(bool_or('lz4' = ANY(enumvals)), false) FROM pg_settings "
    "WHERE name = 'default_toast_compression'"
)


def _set_compression(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql" and bind.execute(HAS_LZ4).scalar():
        op.execute(f"ALTER TABLE build_log_chunks ALTER COLUMN content SET COMPRESSION {method}")


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    _set_compression("DEFAULT")
