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
from app.models.status import BuildStatus, JobStatus, StepStatus
from app.models.tables import (
    Build,
    BuildJob,
    BuildJobEdge,
    BuildLogChunk,
    BuildSnapshot,
    BuildStep,
    PipelineCounter,
)

__all__ = [
    "Build",
    "BuildCreate",
    "BuildDetail",
    "BuildJob",
    "BuildJobEdge",
    "BuildLogChunk",
    "BuildPage",
    "BuildPublic",
    "BuildSnapshot",
    "BuildStatus",
    "BuildStep",
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
    "StepStatus",
]
