"""GitHub Actions: trigger event, runs-on/environment, outputs, annotations, step summaries

Revision ID: gha
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

import app.models.types

revision: str = "gha"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _build_fk() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("build_id", _ID, nullable=False)


def upgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.add_column(
            sa.Column("event_name", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True)
        )
        batch.add_column(sa.Column("event", _JSON, nullable=True))
    with op.batch_alter_table("build_jobs") as batch:
        batch.add_column(sa.Column("runs_on", _JSON, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("environment", _JSON, nullable=True))
    with op.batch_alter_table("build_jobs") as batch:
        batch.alter_column("runs_on", server_default=None)

    op.create_table(
        "build_outputs",
        sa.Column("id", _ID, nullable=False),
        _build_fk(),
        sa.Column("job_name", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"], ["builds.id"], name=op.f("fk_build_outputs_build_id_builds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_build_outputs")),
        sa.UniqueConstraint(
            "build_id", "job_name", "step_index", "name",
            name=op.f("uq_build_outputs_build_id_job_name_step_index_name"),
        ),
    )
    op.create_index(op.f("ix_build_outputs_build_id"), "build_outputs", ["build_id"])
    op.create_table(
        "build_annotations",
        sa.Column("id", _ID, nullable=False),
        _build_fk(),
        sa.Column("job_name", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("level", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("file", sa.Text(), nullable=True),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("end_line", sa.Integer(), nullable=True),
        sa.Column("col", sa.Integer(), nullable=True),
        sa.Column("end_column", sa.Integer(), nullable=True),
        sa.Column("created_at", app.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"], ["builds.id"], name=op.f("fk_build_annotations_build_id_builds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_build_annotations")),
    )
    op.create_index(op.f("ix_build_annotations_build_id"), "build_annotations", ["build_id"])
    op.create_table(
        "build_step_summaries",
        sa.Column("id", _ID, nullable=False),
        _build_fk(),
        sa.Column("job_name", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"], ["builds.id"], name=op.f("fk_build_step_summaries_build_id_builds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_build_step_summaries")),
        sa.UniqueConstraint(
            "build_id", "job_name", "step_index",
            name=op.f("uq_build_step_summaries_build_id_job_name_step_index"),
        ),
    )
    op.create_index(
        op.f("ix_build_step_summaries_build_id"), "build_step_summaries", ["build_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_build_step_summaries_build_id"), table_name="build_step_summaries")
    op.drop_table("build_step_summaries")
    op.drop_index(op.f("ix_build_annotations_build_id"), table_name="build_annotations")
    op.drop_table("build_annotations")
    op.drop_index(op.f("ix_build_outputs_build_id"), table_name="build_outputs")
    op.drop_table("build_outputs")
    with op.batch_alter_table("build_jobs") as batch:
        batch.drop_column("environment")
        batch.drop_column("runs_on")
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("event")
        batch.drop_column("event_name")
