"""What a transaction's events turn into as NOTIFY payloads (pure code)."""

from __future__ import annotations

import json

from app.logs.hub import LogEvent
from app.models.schemas import LogChunkPublic, StatusEvent
from app.models.types import utcnow
from app.services.notify import CancelRequested, notify_payloads


def test_payloads_per_build_and_only_what_remote_replicas_use() -> None:
    chunk = LogChunkPublic(seq=1, job_name="a", step_index=0, content="x", created_at=utcnow())
    events = [
        LogEvent(1, chunk),
        LogEvent(1, chunk),
        StatusEvent(kind="step", build_id=2, job_name="a", step_index=0, status="running"),
        StatusEvent(kind="build", build_id=3, status="success"),
        CancelRequested(4),
        StatusEvent(kind="job", build_id=4, job_name="a", status="cancelled"),
    ]
    payloads = [json.loads(p) for p in notify_payloads(events, "me")]
    assert payloads == [
        {"b": 1, "k": "wake", "s": "me"},
        {"b": 3, "k": "wake", "s": "me"},
        {"b": 4, "k": "cancel", "s": "me"},
    ]
