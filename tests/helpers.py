"""Kept for imports written before tests/support/ existed: new code imports `tests.support`."""

from __future__ import annotations

from tests.support import (
    FINISHED,
    SSEEvent,
    all_logs,
    create,
    free_port,
    job,
    log_text,
    pids_with,
    sse_events,
    step_statuses,
    ts,
    wait_for_build,
    wait_for_output,
    wait_until,
    workflow,
)

__all__ = [
    "FINISHED",
    "SSEEvent",
    "all_logs",
    "create",
    "free_port",
    "job",
    "log_text",
    "pids_with",
    "sse_events",
    "step_statuses",
    "ts",
    "wait_for_build",
    "wait_for_output",
    "wait_until",
    "workflow",
]
