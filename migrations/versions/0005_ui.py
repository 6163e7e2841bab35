"""ui: who cancelled a build, and which jobs a partial re-run reused

Revision ID: ui
Revises: k8s_installation
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "ui"
down_revision: str | None = "k8s_installation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cancelled_by", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True)
        )
    with op.batch_alter_table("build_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "reused_from",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("build_jobs", schema=None) as batch_op:
        batch_op.drop_column("reused_from")
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.drop_column("cancelled_by")
