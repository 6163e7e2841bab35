"""The SSE log stream of one build: replay from the database, then follow live.

Replay and gap-filling always read the database by seq, so the stream never loses or repeats a
chunk however the live path behaves (slow client, another replica writing, reconnects). The live
path is an optimisation: chunks published in-process are sent straight from the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import ServerSentEvent

from app.db import Database
from app.logs.hub import LiveHub, LogEvent, Wakeup
from app.models import Build, BuildStatus, LogChunkPublic
from app.models.schemas import StatusEvent
from app.services.logs import chunks_after


def _log_event(chunk: LogChunkPublic) -> ServerSentEvent:
    return ServerSentEvent(data=chunk.model_dump_json(), event="log", id=str(chunk.seq))


async def _build_status(db: Database, build_id: int) -> BuildStatus | None:
    async with db.read() as session:
        build = await session.get(Build, build_id)
    return BuildStatus(build.status) if build else None


async def stream_build(
    db: Database, hub: LiveHub, build_id: int, after: int, *, poll_seconds: float = 1.0
) -> AsyncIterator[ServerSentEvent]:
    last = after

    async def catch_up() -> AsyncIterator[ServerSentEvent]:
        nonlocal last
        while True:
            batch = await chunks_after(db, build_id, last)
            for chunk in batch:
                last = chunk.seq
                yield _log_event(chunk)
            if len(batch) < 500:
                return

    with hub.subscribe(build_id) as sub:
        async for event in catch_up():
            yield event
        status = await _build_status(db, build_id)
        if status is not None:
            yield ServerSentEvent(
                data=StatusEvent(kind="build", build_id=build_id, status=status).model_dump_json(),
                event="status",
            )
        while status is not None and not status.finished:
            with contextlib.suppress(TimeoutError):
                # The timeout is the polling fallback for writers we get no signal from.
                await asyncio.wait_for(sub.signal.wait(), poll_seconds)
            sub.signal.clear()
            reread = not sub.queue.qsize() or sub.lagged
            if sub.lagged:
                sub.lagged = False
                while not sub.queue.empty():
                    sub.queue.get_nowait()
            items: list[Any] = []
            while not sub.queue.empty():
                items.append(sub.queue.get_nowait())
            for item in items:
                if isinstance(item, LogEvent):
                    if item.chunk.seq <= last:
                        continue
                    if item.chunk.seq != last + 1:  # a gap: someone else's chunk, read it
                        async for event in catch_up():
                            yield event
                        if item.chunk.seq <= last:
                            continue
                    last = item.chunk.seq
                    yield _log_event(item.chunk)
                elif isinstance(item, StatusEvent):
                    yield ServerSentEvent(data=item.model_dump_json(), event="status")
                    if item.kind == "build" and BuildStatus(item.status).finished:
                        status = BuildStatus(item.status)
                elif isinstance(item, Wakeup):
                    reread = True
            if reread:
                async for event in catch_up():
                    yield event
                status = await _build_status(db, build_id)
        # Everything is stored before a build's final status commits; send what is left.
        async for event in catch_up():
            yield event
        if status is not None:
            yield ServerSentEvent(data=f'{{"status": "{status}"}}', event="end")
