"""Public request/response schemas. They mirror the tables' columns that the API exposes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, field_validator

from app.models.status import BuildStatus, JobStatus
from app.models.types import (
    Name,
    PipelineId,
    ShortText,
    Text,
    UrlText,
    ValidText,
    check_json_text,
)

# Variables reach steps as environment variables: shell identifiers, values bounded (GitHub's
# own secrets are at most 48 KB).
VariableName = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]
VariableValue = Annotated[str, StringConstraints(max_length=64 * 1024), ValidText]
_NAME = Field(min_length=1, max_length=255)
EVENT_MAX_BYTES = 256 * 1024  # GitHub caps webhook payloads at 25 MB; ours live in a row


class BuildCreate(BaseModel):
    """CreateBuild's body."""

    model_config = ConfigDict(extra="forbid")

    pipeline_id: PipelineId
    triggered_by: Name | None = Field(
        default=None, description="Who started the build; defaults to the API token's name."
    )
    commit_sha: ShortText | None = None
    branch: ShortText | None = None
    repo_url: UrlText | None = None
    variables: dict[VariableName, VariableValue] = Field(default_factory=dict)
    workflow_yaml: Text | None = Field(
        default=None, description="The workflow; read from pipeline_service when omitted."
    )
    dispatch: StrictBool = Field(default=True, description="Publish the build id to the queue.")
    secrets: dict[VariableName, VariableValue] | None = Field(
        default=None,
        max_length=100,
        description="Secrets for the `secrets` context: encrypted at rest, masked in logs, never "
        "returned by any endpoint, purged SECRETS_RETENTION_DAYS after the build finishes.",
    )
    event_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The trigger's name (`github.event_name`); defaults to `push`.",
    )
    event: dict[str, Any] | None = Field(
        default=None,
        description="The trigger's payload (`github.event`; `inputs` are read from "
        "`event.inputs`). At most 256 KiB as JSON.",
    )

    @field_validator("event")
    @classmethod
    def _event_size(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        check_json_text(value)
        if len(json.dumps(value)) > EVENT_MAX_BYTES:
            raise ValueError(f"event must be at most {EVENT_MAX_BYTES} bytes as JSON")
        return value


class BuildPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    pipeline_id: str
    number: int
    triggered_by: str
    status: BuildStatus
    commit_sha: str | None
    branch: str | None
    repo_url: str | None
    variables: dict[str, str] = Field(description="Secret values are shown as ***.")
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    retry_of: int | None
    cancelled_by: str | None = Field(
        default=None, description="The name of the API token that cancelled the build."
    )
    last_log_seq: int = Field(
        default=0,
        description="The seq of the build's last stored log chunk: a client that loads logs "
        "page by page follows the live stream from there.",
    )
    event_name: str | None = None
    concurrency_group: str | None = Field(
        default=None, description="The workflow's `concurrency` group, as evaluated."
    )
    waiting_reason: str | None = Field(
        default=None,
        description="Why a queued build has not started, e.g. waiting for its concurrency group.",
    )


class StepPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    index: int
    name: str
    status: JobStatus
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    outputs: dict[str, str] = Field(
        default_factory=dict, description="What the step wrote to $GITHUB_OUTPUT."
    )
    summary: str | None = Field(
        default=None, description="The step's $GITHUB_STEP_SUMMARY, as Markdown."
    )


class AnnotationPublic(BaseModel):
    """An `::error::`, `::warning::` or `::notice::` workflow command."""

    model_config = ConfigDict(from_attributes=True)

    job_name: str
    step_index: int
    level: Literal["error", "warning", "notice"]
    message: str
    title: str | None
    file: str | None
    line: int | None
    end_line: int | None
    col: int | None
    end_column: int | None


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    runs_on: list[str] = Field(default_factory=list, description="The job's `runs-on` labels.")
    environment: dict[str, Any] | None = Field(
        default=None, description="The job's `environment` ({name, url})."
    )
    outputs: dict[str, str] = Field(default_factory=dict, description="The job's `outputs:`.")

    id: int
    name: str
    display_name: str
    index: int
    status: JobStatus
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    needs: list[str]
    steps: list[StepPublic]
    reused_from: int | None = Field(
        default=None,
        description="On a partial re-run: the build whose result and log this job reused.",
    )
    pending_expansion: bool = Field(
        default=False,
        description="A placeholder for a matrix computed from `needs` outputs (e.g. "
        "`fromJSON(needs.x.outputs.y)`): replaced by one job per combination once its needs "
        "finish. Stays true on a placeholder that was skipped or failed before expanding.",
    )
    concurrency_group: str | None = Field(
        default=None, description="The job's `concurrency` group, once evaluated."
    )
    waiting_reason: str | None = Field(
        default=None, description="Why a pending job has not started (its concurrency group)."
    )


class EdgePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    from_job: str
    to_job: str


class BuildDetail(BuildPublic):
    yaml_sha256: str
    event: dict[str, Any] | None = None
    annotations: list[AnnotationPublic] = Field(default_factory=list)
    jobs: list[JobPublic]
    edges: list[EdgePublic]


class BuildPage(BaseModel):
    items: list[BuildPublic]
    total: int
    page: int
    size: int


class RetryRequest(BaseModel):
    """Retry's optional body: which jobs to run again (the rest keep their results)."""

    model_config = ConfigDict(extra="forbid")

    failed_only: bool = Field(
        default=False, description="Re-run the failed, timed out, errored and cancelled jobs."
    )
    jobs: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Re-run these jobs (names as in the build's `jobs`).",
    )


class BuildFacets(BaseModel):
    """Filter choices for the build list, from the most recent builds."""

    pipelines: list[str]
    branches: list[str]
    actors: list[str]


class WhoAmI(BaseModel):
    """The caller as the API sees it, so a UI can hide what the token may not do."""

    name: str
    role: str = Field(description="`read` or `write`.")
    can_write: bool
    auth_enabled: bool = Field(description="False when the service runs without API tokens.")


class SnapshotPublic(BaseModel):
    build_id: int
    pipeline_id: str
    workflow_yaml: str
    yaml_sha256: str


class LogAppend(BaseModel):
    """AppendBuildLogs' body."""

    model_config = ConfigDict(extra="forbid")

    content: str
    # seq and step_index are 32-bit columns: bounded so larger values are a 422, not a 500.
    seq: int | None = Field(default=None, ge=1, le=2**31 - 1)
    job_name: str | None = Field(default=None, max_length=255)
    step_index: int | None = Field(default=None, ge=0, le=2**31 - 1)


class LogChunkPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    job_name: str | None
    step_index: int | None
    content: str
    created_at: datetime


class LogPage(BaseModel):
    items: list[LogChunkPublic]
    next_offset: int = Field(description="Pass as `offset` to get what follows.")
    complete: bool = Field(description="The build is finished and nothing follows.")


class StatusEvent(BaseModel):
    """A build, job or step status change, as sent on the SSE stream (`event: status`). Made
    as one of the three subclasses below, whose exact shapes the OpenAPI document publishes."""

    kind: Literal["build", "job", "step"]
    build_id: int
    job_name: str | None = None
    step_index: int | None = None
    status: BuildStatus | JobStatus = Field(
        description="A BuildStatus when `kind` is build, else a JobStatus."
    )
    exit_code: int | None = None
    error: str | None = None


class BuildStatusEvent(StatusEvent):
    """The build's status changed."""

    kind: Literal["build"] = "build"
    status: BuildStatus


class JobStatusEvent(StatusEvent):
    """A job's status changed."""

    kind: Literal["job"] = "job"
    job_name: str
    status: JobStatus


class StepStatusEvent(StatusEvent):
    """A step's status changed (`exit_code` once it finished)."""

    kind: Literal["step"] = "step"
    job_name: str
    step_index: int
    status: JobStatus


AnyStatusEvent = Annotated[
    BuildStatusEvent | JobStatusEvent | StepStatusEvent, Field(discriminator="kind")
]
