"""caches keep no sha256: the archive is not hashed, and "uploaded" is a status

Neither cache protocol (the v2 Twirp service, the v1 REST one) carries a digest of the archive,
and nothing compared the sha256 the service computed: hashing a 200 MB archive was a fifth of a
cache save on the benchmark machine (bench/artifacts.py). The column also marked an archive as
uploaded but not yet finalized; the new status `uploaded` says that now.

Downgrading puts the column back empty, and entries caught between upload and finalize go back
to `reserved` without a digest: their finalize then fails and the job saves the cache again.

Revision ID: cache_digest
Revises: log_chunks_lz4
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "cache_digest"
down_revision: str | None = "log_chunks_lz4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE action_caches SET status = 'uploaded' "
        "WHERE status = 'reserved' AND sha256 IS NOT NULL"
    )
    with op.batch_alter_table("action_caches") as batch:
        batch.drop_column("sha256")


def downgrade() -> None:
    with op.batch_alter_table("action_caches") as batch:
        batch.add_column(
            sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
    op.execute("UPDATE action_caches SET status = 'reserved' WHERE status = 'uploaded'")
