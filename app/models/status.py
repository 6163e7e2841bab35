"""Status vocabularies (DESIGN.md §3). Transitions live in app/services/state.py."""

from __future__ import annotations

from enum import StrEnum


class BuildStatus(StrEnum):
    queued = "queued"
    running = "running"
    success = "success"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"
    error = "error"

    @property
    def finished(self) -> bool:
        return self not in (BuildStatus.queued, BuildStatus.running)


class JobStatus(StrEnum):
    """Used for jobs and steps alike."""

    pending = "pending"
    running = "running"
    success = "success"
    failed = "failed"
    cancelled = "cancelled"
    skipped = "skipped"
    timed_out = "timed_out"
    error = "error"

    @property
    def finished(self) -> bool:
        return self not in (JobStatus.pending, JobStatus.running)

    @property
    def is_failure(self) -> bool:
        return self in (JobStatus.failed, JobStatus.timed_out, JobStatus.error)
