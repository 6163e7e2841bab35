"""The SSE log stream of one build: replay from the database, then follow live.

Replay and gap-filling always read the database by seq, so the stream never loses or repeats a
chunk however the live path behaves (slow client, another replica writing, reconnects). The live
path is an optimisation: chunks published in-process are sent straight from the hub, each encoded
once for all subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession
from sse_starlette import ServerSentEvent

from app.db import Database
from app.logs.events import (
    BuildStatusEvent,
    HubEvent,
    LogEvent,
    StatusEvent,
    Wakeup,
    end_event,
    log_frame,
    status_event,
)
from app.logs.hub import LiveHub, Subscription
from app.logs.store import chunks_after
from app.models import Build, BuildStatus

_BATCH = 500


@asynccontextmanager
async def stream_read(db: Database, hub: LiveHub) -> AsyncIterator[AsyncSession]:
    """A read session for an SSE stream: at most `hub.stream_reads` of them at once, the others
    wait their turn here (no timeout), so a thousand streams connecting together queue instead
    of exhausting the connection pool."""
    async with hub.stream_reads, db.read() as session:
        yield session


async def _build_state(db: Database, hub: LiveHub, build_id: int) -> tuple[BuildStatus | None, int]:
    """The build's status and last stored seq: one small query, so a stream woken without news
    (a poll, another replica's NOTIFY) reads chunks only when there are new ones."""
    async with stream_read(db, hub) as session:
        row = (
            await session.exec(select(Build.status, Build.last_log_seq).where(Build.id == build_id))
        ).first()
    if row is None:
        return None, 0
    return BuildStatus(row[0]), row[1]


def _drain(sub: Subscription) -> list[HubEvent]:
    """What the subscriber's queue holds; nothing when it lagged (what it dropped is read back
    from the database by seq instead)."""
    items: list[HubEvent] = []
    while not sub.queue.empty():
        items.append(sub.queue.get_nowait())
    if sub.lagged:
        sub.lagged = False
        return []
    return items


async def _wake_on(event: anyio.Event, signal: asyncio.Event) -> None:
    await event.wait()
    signal.set()


async def stream_build(
    db: Database,
    hub: LiveHub,
    build_id: int,
    after: int,
    *,
    shutdown: anyio.Event | None = None,
    poll_seconds: float = 1.0,
) -> AsyncIterator[ServerSentEvent | bytes]:
    """Yield SSE frames for one build until `end`. When `shutdown` is set (the server is
    stopping) the stream ends early but cleanly; the client resumes with Last-Event-ID."""
    last = after

    async def catch_up() -> AsyncIterator[bytes]:
        nonlocal last
        while True:
            async with stream_read(db, hub) as session:
                batch = await chunks_after(session, build_id, last, limit=_BATCH)
            for chunk in batch:
                last = chunk.seq
                yield log_frame(chunk)
            if len(batch) < _BATCH:
                return

    with hub.subscribe(build_id) as sub:
        watcher = asyncio.create_task(_wake_on(shutdown, sub.signal)) if shutdown else None
        try:
            async for event in catch_up():
                yield event
            status, _ = await _build_state(db, hub, build_id)
            if status is not None:
                yield status_event(BuildStatusEvent(build_id=build_id, status=status))
            while status is not None and not status.finished:
                with contextlib.suppress(TimeoutError):
                    # The timeout is the polling fallback for writers we get no signal from.
                    await asyncio.wait_for(sub.signal.wait(), poll_seconds)
                if shutdown is not None and shutdown.is_set():
                    return
                sub.signal.clear()
                reread = not sub.queue.qsize() or sub.lagged
                fresh = sub.lagged  # a poll may share its read with the build's other streams
                items = _drain(sub)
                for item in items:
                    if isinstance(item, LogEvent):
                        if item.chunk.seq <= last:
                            continue
                        if item.chunk.seq != last + 1:  # a gap (another writer): read it first
                            async for event in catch_up():
                                yield event
                            if item.chunk.seq <= last:
                                continue
                        last = item.chunk.seq
                        yield item.frame
                    elif isinstance(item, StatusEvent):
                        yield status_event(item)
                        if item.kind == "build" and BuildStatus(item.status).finished:
                            status = BuildStatus(item.status)
                    elif isinstance(item, Wakeup):
                        reread = fresh = True
                if reread:
                    status, stored = await (
                        _build_state(db, hub, build_id)
                        if fresh
                        else hub.shared_read(build_id, lambda: _build_state(db, hub, build_id))
                    )
                    if stored > last:
                        async for event in catch_up():
                            yield event
            # Everything is stored before a build's final status commits; send what is left.
            async for event in catch_up():
                yield event
            if status is not None:
                yield end_event(status)
        finally:
            if watcher is not None:
                watcher.cancel()
