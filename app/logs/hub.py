"""In-process fan-out of live log chunks and status changes to SSE subscribers.

Each subscriber has a bounded queue. A subscriber that falls behind is marked `lagged` instead of
blocking the publisher or growing without bound; its stream then reads the missed chunks from the
database by seq, so a slow client loses nothing. Cross-replica wake-ups (Postgres NOTIFY) arrive
as `Wakeup` events through the same path.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sse_starlette import ServerSentEvent

from app.models.schemas import LogChunkPublic, StatusEvent


@dataclass(frozen=True)
class LogEvent:
    build_id: int
    chunk: LogChunkPublic

    @cached_property
    def frame(self) -> bytes:
        """The SSE frame, encoded once however many subscribers receive it."""
        return sse_frame(self.chunk)


def sse_frame(chunk: LogChunkPublic) -> bytes:
    event = ServerSentEvent(data=chunk.model_dump_json(), event="log", id=str(chunk.seq))
    return event.encode()


@dataclass(frozen=True)
class Wakeup:
    """Something changed for this build elsewhere (another replica): re-read the database."""

    build_id: int


HubEvent = LogEvent | StatusEvent | Wakeup


@dataclass(eq=False)
class Subscription:
    build_id: int
    queue: asyncio.Queue[HubEvent]
    lagged: bool = False
    # Set on every publish, even when the queue is full, so a lagged reader still wakes up.
    signal: asyncio.Event = field(default_factory=asyncio.Event)


class LiveHub:
    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._subs: dict[int, set[Subscription]] = defaultdict(set)

    @property
    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._subs.values())

    @contextmanager
    def subscribe(self, build_id: int) -> Iterator[Subscription]:
        sub = Subscription(build_id, asyncio.Queue(maxsize=self.queue_size))
        self._subs[build_id].add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(build_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[build_id]

    def publish(self, event: HubEvent) -> None:
        for sub in self._subs.get(event.build_id, ()):
            if not sub.lagged:
                try:
                    sub.queue.put_nowait(event)
                except asyncio.QueueFull:
                    sub.lagged = True
            sub.signal.set()

    def publish_many(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, LogEvent | StatusEvent | Wakeup):
                self.publish(event)
