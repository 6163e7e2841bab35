"""concurrency groups (builds and jobs) and matrix placeholders awaiting expansion

Revision ID: concurrency
Revises: action_pins
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.models.types

revision: str = "concurrency"
down_revision: str | None = "action_pins"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUNNING = sa.text("status = 'running' AND concurrency_key IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("concurrency_group", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "concurrency_key", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True
            )
        )
        batch_op.add_column(sa.Column("waiting_reason", sa.Text(), nullable=True))
        batch_op.create_index(
            "ix_builds_pipeline_id_concurrency_key", ["pipeline_id", "concurrency_key"]
        )
        batch_op.create_index(
            "uq_builds_running_concurrency_key",
            ["pipeline_id", "concurrency_key"],
            unique=True,
            postgresql_where=RUNNING,
            sqlite_where=RUNNING,
        )
    with op.batch_alter_table("build_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("pending_expansion", sa.Boolean(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("concurrency_group", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "concurrency_key", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True
            )
        )
        batch_op.add_column(sa.Column("waiting_reason", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "cancel_requested_at", app.models.types.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.create_index("ix_build_jobs_concurrency_key", ["concurrency_key"])


def downgrade() -> None:
    with op.batch_alter_table("build_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_build_jobs_concurrency_key")
        batch_op.drop_column("cancel_requested_at")
        batch_op.drop_column("waiting_reason")
        batch_op.drop_column("concurrency_key")
        batch_op.drop_column("concurrency_group")
        batch_op.drop_column("pending_expansion")
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.drop_index("uq_builds_running_concurrency_key")
        batch_op.drop_index("ix_builds_pipeline_id_concurrency_key")
        batch_op.drop_column("waiting_reason")
        batch_op.drop_column("concurrency_key")
        batch_op.drop_column("concurrency_group")
