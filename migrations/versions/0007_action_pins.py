"""pinned actions of a build's snapshot

Revision ID: action_pins
Revises: artifacts
Create Date: 2026-12-02 10:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "action_pins"
down_revision: str | None = "artifacts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("build_snapshots") as batch:
        batch.add_column(sa.Column("actions", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("build_snapshots") as batch:
        batch.drop_column("actions")
