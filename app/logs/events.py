"""The events of the live log stream (`GET /builds/{id}/logs/stream`), typed in one place.

Three SSE event types carry JSON data: `log` (a stored chunk, `id` = its seq), `status` (a
build, job or step status change) and `end` (the build finished and every chunk was sent).
Their payload models are published in the OpenAPI document (`LogStreamEvents`), from which
the web UI generates its TypeScript types, so the server and the client cannot drift apart.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from sse_starlette import ServerSentEvent

from app.logs.hub import HubEvent, LogEvent, Wakeup, sse_frame
from app.models.schemas import AnyStatusEvent, BuildStatusEvent, LogChunkPublic, StatusEvent
from app.models.status import BuildStatus

__all__ = [
    "BuildStatusEvent",
    "EndEvent",
    "HubEvent",
    "LogEvent",
    "LogStreamEvents",
    "StatusEvent",
    "Wakeup",
    "end_event",
    "log_frame",
    "status_event",
]


class EndEvent(BaseModel):
    """`event: end`: the build finished with `status` and every chunk was sent."""

    status: BuildStatus


class LogStreamEvents(BaseModel):
    """The data of each SSE event type on the log stream, by event name. Never sent as one
    object: every SSE message carries exactly one of these as its JSON `data`."""

    log: LogChunkPublic = Field(description="`event: log`, `id` = the chunk's seq.")
    status: AnyStatusEvent = Field(description="`event: status`.")
    end: EndEvent = Field(description="`event: end`, the last message of the stream.")


def log_frame(chunk: LogChunkPublic) -> bytes:
    """A `log` event, encoded (the hub encodes live chunks once for all subscribers)."""
    return sse_frame(chunk)


def status_event(event: StatusEvent) -> ServerSentEvent:
    return ServerSentEvent(data=event.model_dump_json(), event="status")


def end_event(status: BuildStatus) -> ServerSentEvent:
    return ServerSentEvent(data=EndEvent(status=status).model_dump_json(), event="end")
