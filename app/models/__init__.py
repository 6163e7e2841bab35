"""Tables and their public schemas."""

from app.models.installation import Installation
from app.models.schemas import (
    BuildCreate,
    BuildDetail,
    BuildPage,
    BuildPublic,
    EdgePublic,
    JobPublic,
    LogAppend,
    LogChunkPublic,
    LogPage,
    SnapshotPublic,
    StepPublic,
)
from app.models.status import BuildStatus, JobStatus
from app.models.tables import (
    Build,
    BuildAnnotation,
    BuildJob,
    BuildJobEdge,
    BuildLogChunk,
    BuildOutput,
    BuildSnapshot,
    BuildStep,
    BuildStepSummary,
    PipelineCounter,
)

__all__ = [
    "Build",
    "BuildAnnotation",
    "BuildCreate",
    "BuildDetail",
    "BuildJob",
    "BuildJobEdge",
    "BuildLogChunk",
    "BuildOutput",
    "BuildPage",
    "BuildPublic",
    "BuildSnapshot",
    "BuildStatus",
    "BuildStep",
    "BuildStepSummary",
    "EdgePublic",
    "Installation",
    "JobPublic",
    "JobStatus",
    "LogAppend",
    "LogChunkPublic",
    "LogPage",
    "PipelineCounter",
    "SnapshotPublic",
    "StepPublic",
]
