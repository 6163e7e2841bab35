"""installation id (k8s: Jobs are only ever followed by the database that created them)

Revision ID: k8s_installation
Revises: security
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "k8s_installation"
down_revision: str | None = "security"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "installation",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("value", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_installation")),
    )
    # Made once, here: every replica reads the same id; a new (or reset) database gets a new one.
    op.bulk_insert(table, [{"key": "id", "value": uuid.uuid4().hex}])


def downgrade() -> None:
    op.drop_table("installation")
