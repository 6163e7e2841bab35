"""SQLModel tables (docs/design.md, "Data model"). Comments marked + explain the columns the
executor adds to the original design."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from app.models.types import BigIntPK, JSONVariant, UTCDateTime, utcnow

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _fk_build() -> Any:
    return Field(
        sa_column=Column(
            BigIntPK, ForeignKey("builds.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )


class Build(SQLModel, table=True):
    __tablename__ = "builds"
    __table_args__ = (
        UniqueConstraint("pipeline_id", "number"),
        UniqueConstraint("pipeline_id", "idempotency_key"),
        Index("ix_builds_pipeline_id_id", "pipeline_id", "id"),
        Index("ix_builds_status_id", "status", "id"),
        Index("ix_builds_pipeline_id_concurrency_key", "pipeline_id", "concurrency_key"),
        # The database's own guarantee behind app/services/concurrency.py: one running build
        # per concurrency group of a pipeline, whatever the replicas do.
        Index(
            "uq_builds_running_concurrency_key",
            "pipeline_id",
            "concurrency_key",
            unique=True,
            postgresql_where=text("status = 'running' AND concurrency_key IS NOT NULL"),
            sqlite_where=text("status = 'running' AND concurrency_key IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    pipeline_id: str = Field(max_length=255)
    number: int
    triggered_by: str = Field(max_length=255)
    status: str = Field(default="queued", max_length=16)
    commit_sha: str | None = Field(default=None, max_length=255)
    branch: str | None = Field(default=None, max_length=255)
    repo_url: str | None = Field(default=None, sa_type=Text)
    variables: dict[str, str] = Field(default_factory=dict, sa_type=JSONVariant)
    error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cancel_requested_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    retry_of: int | None = Field(
        default=None, sa_column=Column(BigIntPK, ForeignKey("builds.id"), nullable=True)
    )
    last_log_seq: int = Field(default=0)
    lease_owner: str | None = Field(default=None, max_length=255)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # + when the id was last handed to the queue; the requeue sweep re-publishes stale ones.
    dispatched_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    idempotency_key: str | None = Field(default=None, max_length=255)
    # + the name of the API token that asked for the cancel (shown in the UI).
    cancelled_by: str | None = Field(default=None, max_length=255)
    # + the trigger (GitHub's `github.event_name` / `github.event`; `inputs` come from the event)
    event_name: str | None = Field(default=None, max_length=255)
    event: dict[str, Any] | None = Field(default=None, sa_type=JSONVariant)
    # + security: sha256 of the create request (an Idempotency-Key reused with another body is
    # refused); the build's secrets, encrypted (app/secrets.py); when they were purged.
    request_sha256: str | None = Field(default=None, max_length=64)
    secrets_sealed: str | None = Field(default=None, sa_type=Text)
    secrets_purged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # + workflow-level `concurrency`: the group as evaluated at create time, its case-folded
    # key (GitHub compares group names case-insensitively), and why a queued build waits.
    concurrency_group: str | None = Field(default=None, sa_type=Text)
    concurrency_key: str | None = Field(default=None, max_length=255)
    waiting_reason: str | None = Field(default=None, sa_type=Text)


class BuildSnapshot(SQLModel, table=True):
    __tablename__ = "build_snapshots"

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    build_id: int = Field(
        sa_column=Column(
            BigIntPK, ForeignKey("builds.id", ondelete="CASCADE"), nullable=False, unique=True
        )
    )
    pipeline_id: str = Field(max_length=255)
    workflow_yaml: str = Field(sa_type=Text)
    yaml_sha256: str = Field(max_length=64)
    # The remote actions the workflow uses, resolved when the build was created (a retry runs
    # the same commits): {uses: {"commit": sha, "post": bool}} (app/actions/support.py).
    actions: dict[str, Any] | None = Field(default=None, sa_type=JSONVariant)


class BuildJob(SQLModel, table=True):
    __tablename__ = "build_jobs"
    __table_args__ = (UniqueConstraint("build_id", "name"),)

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    build_id: int = _fk_build()
    name: str = Field(max_length=255)
    display_name: str = Field(max_length=255)
    status: str = Field(default="pending", max_length=16)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    index: int
    error: str | None = Field(default=None, sa_type=Text)
    # + the runner's byte offset (e.g. into the pod log) up to which output is stored.
    log_offset: int = Field(default=0, sa_type=BigInteger)
    # + set on a partial re-run: the build whose result (steps and log) this job reused.
    reused_from: int | None = Field(default=None, sa_type=BigIntPK)
    # + `runs-on` labels and `environment` ({name, url}), recorded to be shown
    runs_on: list[str] = Field(default_factory=list, sa_type=JSONVariant)
    environment: dict[str, Any] | None = Field(default=None, sa_type=JSONVariant)
    # + a placeholder for a matrix computed from `needs` outputs, replaced once they are known
    pending_expansion: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    # + job-level `concurrency`, evaluated when the job's needs have finished (see Build)
    concurrency_group: str | None = Field(default=None, sa_type=Text)
    concurrency_key: str | None = Field(default=None, max_length=255, index=True)
    waiting_reason: str | None = Field(default=None, sa_type=Text)
    # + another build's `cancel-in-progress` asked this running job to stop
    cancel_requested_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class BuildJobEdge(SQLModel, table=True):
    __tablename__ = "build_job_edges"

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    build_id: int = _fk_build()
    from_job: str = Field(max_length=255)
    to_job: str = Field(max_length=255)


class BuildStep(SQLModel, table=True):
    __tablename__ = "build_steps"
    __table_args__ = (UniqueConstraint("build_id", "job_name", "index"),)

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    build_id: int = _fk_build()
    job_name: str = Field(max_length=255)
    index: int
    name: str = Field(sa_type=Text)
    status: str = Field(default="pending", max_length=16)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    exit_code: int | None = None


class BuildLogChunk(SQLModel, table=True):
    __tablename__ = "build_log_chunks"
    __table_args__ = (UniqueConstraint("build_id", "seq"),)

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    build_id: int = Field(
        sa_column=Column(BigIntPK, ForeignKey("builds.id", ondelete="CASCADE"), nullable=False)
    )
    seq: int
    job_name: str | None = Field(default=None, max_length=255)
    step_index: int | None = None
    content: str = Field(sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PipelineCounter(SQLModel, table=True):
    """+ Per-pipeline build number allocator (an upsert serialises concurrent creates)."""

    __tablename__ = "pipeline_counters"

    pipeline_id: str = Field(primary_key=True, max_length=255)
    last_number: int = 0


class BuildOutput(SQLModel, table=True):
    """+ A step output (`$GITHUB_OUTPUT`, step_index >= 0) or a job output (`outputs:`,
    step_index = -1): what `steps.<id>.outputs` and `needs.<job>.outputs` read."""

    __tablename__ = "build_outputs"
    __table_args__ = (UniqueConstraint("build_id", "job_name", "step_index", "name"),)

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    build_id: int = _fk_build()
    job_name: str = Field(max_length=255)
    step_index: int
    name: str = Field(max_length=255)
    value: str = Field(sa_type=Text)


class BuildAnnotation(SQLModel, table=True):
    """+ An `::error::`, `::warning::` or `::notice::` workflow command from a step's output."""

    __tablename__ = "build_annotations"

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    build_id: int = _fk_build()
    job_name: str = Field(max_length=255)
    step_index: int
    level: str = Field(max_length=16)
    message: str = Field(sa_type=Text)
    title: str | None = Field(default=None, sa_type=Text)
    file: str | None = Field(default=None, sa_type=Text)
    line: int | None = None
    end_line: int | None = None
    col: int | None = None
    end_column: int | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class BuildStepSummary(SQLModel, table=True):
    """+ A step's `$GITHUB_STEP_SUMMARY` Markdown."""

    __tablename__ = "build_step_summaries"
    __table_args__ = (UniqueConstraint("build_id", "job_name", "step_index"),)

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    build_id: int = _fk_build()
    job_name: str = Field(max_length=255)
    step_index: int
    content: str = Field(sa_type=Text)
