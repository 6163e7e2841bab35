"""The SSE log stream of one build: replay from the database, then follow live.

Replay and gap-filling always read the database by seq, so the stream never loses or repeats a
chunk however the live path behaves (slow client, another replica writing, reconnects). The live
path is an optimisation: chunks published in-process are sent straight from the hub, each encoded
once for all subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

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
    for _ in range(sub.pending):
        items.append(sub.queue.get_nowait())
    if sub.lagged:
        sub.lagged = False
        return []
    return items


def ping_frame() -> bytes:
    """The keep-alive comment, as EventSourceResponse sent it (clients ignore comments)."""
    comment = f"ping - {datetime.now(UTC)}"
    return ServerSentEvent(comment=comment, sep="\r\n").encode()


class _Stream:
    """One subscriber's stream. Everything it does happens in the request's own task: it sleeps
    on its subscription's signal (set by the hub) with a timeout, and that wake-up also serves
    the polling fallback, the keep-alive comment and noticing a server shutdown."""

    __slots__ = ("build_id", "db", "hub", "last")

    def __init__(self, db: Database, hub: LiveHub, build_id: int, after: int) -> None:
        self.db = db
        self.hub = hub
        self.build_id = build_id
        self.last = after

    async def catch_up(self, since: float) -> AsyncIterator[bytes]:
        """The stored chunks after the last one sent. `since`: the loop time of what told the
        stream to read (see LiveHub.chunks_read: the read, and the frames' encoding, are shared
        with the build's other streams reading from the same seq at the same time)."""
        while True:
            after = self.last
            batch = await self.hub.chunks_read(
                self.build_id, after, since, functools.partial(self._frames_after, after)
            )
            for seq, frame in batch:
                self.last = seq
                yield frame
            if len(batch) < _BATCH:
                return

    async def _frames_after(self, after: int) -> list[tuple[int, bytes]]:
        # Its turn at stream_reads is taken by hub.chunks_read, which calls this.
        async with self.db.read() as session:
            batch = await chunks_after(session, self.build_id, after, limit=_BATCH)
        return [(chunk.seq, log_frame(chunk)) for chunk in batch]

    async def live(self, sub: Subscription) -> AsyncIterator[bytes | BuildStatus | None]:
        """What one wake-up brings: frames, and the build's status (None: gone) when read."""
        reread = not sub.pending or sub.lagged
        fresh = sub.lagged  # a poll may share its read with the build's other streams
        for item in _drain(sub):
            if isinstance(item, LogEvent):
                if item.chunk.seq <= self.last:
                    continue
                if item.chunk.seq != self.last + 1:  # a gap (another writer): read it first
                    async for frame in self.catch_up(asyncio.get_running_loop().time()):
                        yield frame
                    if item.chunk.seq <= self.last:
                        continue
                self.last = item.chunk.seq
                yield item.frame
            elif isinstance(item, StatusEvent):
                yield status_event(item).encode()
                if item.kind == "build" and BuildStatus(item.status).finished:
                    yield BuildStatus(item.status)
            elif isinstance(item, Wakeup):
                reread = fresh = True
        if reread:
            if fresh:
                since = asyncio.get_running_loop().time()
                found, stored = await _build_state(self.db, self.hub, self.build_id)
            else:
                (found, stored), since = await self.hub.shared_read_at(
                    self.build_id, lambda: _build_state(self.db, self.hub, self.build_id)
                )
            yield found
            if stored > self.last:
                async for frame in self.catch_up(since):
                    yield frame


async def stream_build(
    db: Database,
    hub: LiveHub,
    build_id: int,
    after: int,
    *,
    stopping: Callable[[], bool] = lambda: False,
    ping_seconds: float = 15.0,
    poll_seconds: float = 1.0,
) -> AsyncIterator[bytes]:
    """Yield SSE frames for one build until `end`, with a keep-alive comment after
    `ping_seconds` without one. Once `stopping()` is true (the server is shutting down) the
    stream ends early but cleanly; the client resumes with Last-Event-ID."""
    stream = _Stream(db, hub, build_id, after)
    loop = asyncio.get_running_loop()
    with hub.subscribe(build_id) as sub:
        hub.poll(build_id, lambda: _build_state(db, hub, build_id), poll_seconds, stopping)
        # What was stored before the subscription is read; what came after is in the queue.
        # Both reads are shared with the build's other streams that subscribed before them
        # (a hundred tabs opened together: one read each, one after another, delayed the
        # first live chunk behind them: bench/sse_fanout.py).
        subscribed = loop.time()
        async for frame in stream.catch_up(subscribed):
            yield frame
        (status, _), _ = await hub.shared_read_at(
            build_id, lambda: _build_state(db, hub, build_id), since=subscribed
        )
        if status is not None:
            yield status_event(BuildStatusEvent(build_id=build_id, status=status)).encode()
        quiet_since = loop.time()
        while status is not None and not status.finished:
            with contextlib.suppress(TimeoutError):
                # The hub's poller (hub.poll) wakes the stream when the build changed without
                # a signal (another writer); the timeout is the keep-alive's, and re-reads
                # the build's state (shared) in case the poller's read failed.
                async with asyncio.timeout_at(quiet_since + ping_seconds):
                    await sub.signal.wait()
            if stopping():
                return
            sub.signal.clear()
            async for item in stream.live(sub):
                if isinstance(item, bytes):
                    quiet_since = loop.time()
                    yield item
                else:
                    status = item
            if loop.time() - quiet_since >= ping_seconds:
                quiet_since = loop.time()
                yield ping_frame()
        # Everything is stored before a build's final status commits; send what is left. The
        # build's streams end together, woken by the same status: they share the read that
        # is still waiting for its turn (LiveHub.chunks_read).
        async for frame in stream.catch_up(loop.time()):
            yield frame
        if status is not None:
            yield end_event(status).encode()
