"""Security: idempotency request hash, secrets encrypted at rest and their purge time

Revision ID: security
Revises: gha
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.models.types

revision: str = "security"
down_revision: str | None = "gha"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.add_column(
            sa.Column("request_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch.add_column(sa.Column("secrets_sealed", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column(
                "secrets_purged_at", app.models.types.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("secrets_purged_at")
        batch.drop_column("secrets_sealed")
        batch.drop_column("request_sha256")
