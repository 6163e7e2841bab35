"""Log routes: paged chunks, raw text, appends, and the live SSE stream."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import StreamingResponse
from sse_starlette.sse import AppStatus

from app.api.deps import (
    DbDep,
    HubDep,
    ReaderDep,
    ReadSessionDep,
    ServicesDep,
    SettingsDep,
    WriterDep,
)
from app.api.event_stream import EventStream
from app.errors import Invalid, TooLarge
from app.logs.events import LogStreamEvents
from app.logs.stream import stream_build, stream_read
from app.models import LogAppend, LogChunkPublic, LogPage
from app.services import logs as service
from app.services.builds import get_build

router = APIRouter(tags=["logs"])

# seq and step_index are 32-bit integer columns and build ids 64-bit ones: larger values are
# refused here with a 422 rather than overflowing the database driver (a 500).
MAX_SEQ = 2**31 - 1
BuildId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Step = Annotated[int | None, Query(ge=0, le=MAX_SEQ)]
Job = Annotated[str | None, Query(max_length=255, pattern="^[^\\x00]*$")]


@router.post("/builds/{build_id}/logs", status_code=201, response_model=LogChunkPublic)
async def append_logs(
    build_id: BuildId,
    body: LogAppend,
    response: Response,
    db: DbDep,
    settings: SettingsDep,
    services: ServicesDep,
    _caller: WriterDep,
) -> LogChunkPublic:
    """AppendBuildLogs. Without `seq` the chunk goes at the end (201). With `seq`: writing the
    same content at the same seq again is a no-op (200); different content there, or a seq that
    would leave a gap, is a 409. Secret values are masked before storing."""
    if len(body.content.encode(errors="replace")) > settings.max_log_append_bytes:
        raise TooLarge(f"content is larger than {settings.max_log_append_bytes} bytes")
    async with db.transaction() as session:
        chunk, created = await service.append(session, build_id, body, services.secret_box)
    if not created:
        response.status_code = 200
    return chunk


@router.get("/builds/{build_id}/logs", response_model=LogPage)
async def get_logs(
    build_id: BuildId,
    session: ReadSessionDep,
    _caller: ReaderDep,
    offset: Annotated[
        int, Query(ge=0, le=MAX_SEQ, description="Return chunks with seq > offset.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    job: Job = None,
    step: Step = None,
) -> LogPage:
    """GetBuildLogs: chunks after `offset` in seq order, optionally of one job (and step).
    A page holds at most `limit` chunks and about 4 MB of content (at least one chunk);
    continue from `next_offset`. `complete` is true once the build is finished and nothing
    follows."""
    return await service.page(session, build_id, offset=offset, limit=limit, job=job, step=step)


@router.get("/builds/{build_id}/logs/raw", response_class=StreamingResponse)
async def get_raw_logs(
    build_id: BuildId,
    db: DbDep,
    _caller: ReaderDep,
    job: Job = None,
    step: Step = None,
    download: Annotated[
        bool, Query(description="Answer as an attachment (a file download).")
    ] = False,
) -> StreamingResponse:
    """The whole log (or one job's, or one step's) as text/plain, streamed. The
    Content-Disposition names the file after the build
    (`<pipeline>-<number>[-<job>][-step<n>].log`), inline unless `download` is set."""
    async with db.read() as session:
        build = await get_build(session, build_id)
    name = raw_log_filename(build.pipeline_id, build.number, job, step)
    disposition = "attachment" if download else "inline"
    return StreamingResponse(
        service.raw(db, build_id, job=job, step=step),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'{disposition}; filename="{name}"'},
    )


def raw_log_filename(pipeline_id: str, number: int, job: str | None, step: int | None) -> str:
    """A file name safe in a header and on any file system: other characters become `_`."""
    parts = [pipeline_id, str(number)]
    if job is not None:
        parts.append(job)
    if step is not None:
        parts.append(f"step{step}")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))[:200] + ".log"


def _server_stopping() -> bool:
    """Set on SIGTERM by sse-starlette's hook into uvicorn (documented there): streams then end
    cleanly within a poll interval instead of holding the shutdown up."""
    return AppStatus.should_exit


@router.get(
    "/builds/{build_id}/logs/stream",
    response_class=EventStream,
    responses={
        200: {
            "description": "An SSE stream; each event's JSON data is the field of "
            "LogStreamEvents named like the event.",
            "content": {
                "text/event-stream": {"schema": {"$ref": "#/components/schemas/LogStreamEvents"}}
            },
            "model": LogStreamEvents,
        }
    },
)
async def stream_logs(
    build_id: BuildId,
    db: DbDep,
    hub: HubDep,
    settings: SettingsDep,
    _caller: ReaderDep,
    offset: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventStream:
    """StreamBuildLogs (Server-Sent Events). Replays chunks after `offset` (or the
    `Last-Event-ID` header) from the database, then follows live:
    `event: log` (`id` = seq, data = the chunk), `event: status` (build/job/step changes),
    and `event: end` (data `{"status": ...}`) once the build is finished and every chunk was
    sent. Comment pings keep proxies from closing an idle stream."""
    after = offset or 0
    if last_event_id:
        value = last_event_id.strip()
        # Length first: int() of a huge digit string is slow, then refused by Python itself.
        if not (value.isascii() and value.isdigit()) or len(value) > 10 or int(value) > MAX_SEQ:
            raise Invalid(f"Last-Event-ID must be a log seq (0 to {MAX_SEQ})")
        after = max(after, int(value))

    async def check_build() -> None:
        async with stream_read(db, hub) as session:
            await get_build(session, build_id)

    return EventStream(
        stream_build(
            db,
            hub,
            build_id,
            after,
            stopping=_server_stopping,
            ping_seconds=settings.sse_ping_seconds,
        ),
        # The 404 check waits its turn for a database read (stream_read), so it runs in the
        # stream, after this route's stack has returned: a connect storm of a thousand streams
        # then does not hold a thousand request stacks at once (RSS per idle subscriber after
        # one, bench/sse_idle.py: 29.6 -> about 19 KiB, the rest being pymalloc free blocks).
        check=check_build,
    )
