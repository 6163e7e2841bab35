"""In-process fan-out of live log chunks and status changes to SSE subscribers.

Each subscriber has a bounded queue. A subscriber that falls behind is marked `lagged` instead of
blocking the publisher or growing without bound; its stream then reads the missed chunks from the
database by seq, so a slow client loses nothing. Cross-replica wake-ups (Postgres NOTIFY) arrive
as `Wakeup` events through the same path.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

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
T = TypeVar("T")
log = logging.getLogger(__name__)


class Signal:
    """asyncio.Event for its one waiter (the subscriber's stream). An Event keeps a deque of
    waiters, about 0.7 KiB, which a thousand idle SSE subscribers would each hold for one
    waiter at most (bench/sse_idle.py, target 20 KiB a subscriber); this keeps a future only
    while the stream waits."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._set:
            return
        if self._waiter is not None:
            raise RuntimeError("a Signal has one waiter")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


@dataclass(eq=False)
class Subscription:
    build_id: int
    queue_size: int
    lagged: bool = False
    # Set on every publish, even when the queue is full, so a lagged reader still wakes up.
    signal: Signal = field(default_factory=Signal)

    @cached_property
    def queue(self) -> asyncio.Queue[HubEvent]:
        """Made on first use: an asyncio.Queue is four deques, about 3 KiB, which a thousand
        idle SSE subscribers (bench/sse_idle.py) would otherwise hold for nothing."""
        return asyncio.Queue(maxsize=self.queue_size)

    @property
    def pending(self) -> int:
        """Events queued, without making the queue."""
        queue: asyncio.Queue[HubEvent] | None = self.__dict__.get("queue")
        return 0 if queue is None else queue.qsize()


class _SharedRead:
    """A chunk read several streams wait for (LiveHub.chunks_read)."""

    __slots__ = ("began", "result")

    def __init__(self) -> None:
        self.began: float | None = None  # loop time it got its turn; None: still waiting
        self.result: asyncio.Future[Any]


class LiveHub:
    def __init__(
        self, queue_size: int = 1000, shared_read_seconds: float = 0.5, stream_reads: int = 10
    ) -> None:
        self.queue_size = queue_size
        # Database reads of SSE streams in flight at once: the rest wait here, without a
        # timeout, instead of in the connection pool (which times out after DB_POOL_TIMEOUT).
        self.stream_reads = asyncio.Semaphore(stream_reads)
        self._subs: dict[int, set[Subscription]] = defaultdict(set)
        self._shared_read_seconds = shared_read_seconds
        self._reads: dict[int, tuple[float, asyncio.Future[Any]]] = {}
        self._chunk_reads: dict[tuple[int, int], _SharedRead] = {}
        self._pollers: dict[int, asyncio.Task[None]] = {}

    def poll(
        self,
        build_id: int,
        load: Callable[[], Awaitable[Any]],
        seconds: float,
        stopping: Callable[[], bool],
    ) -> None:
        """The polling fallback of a build's streams, one task per build instead of every
        stream waking up each `seconds` (a thousand idle streams were a thousand wake-ups a
        second, bench/sse_idle.py). Every `seconds` it reads `load()` through `shared_read`
        and wakes the build's subscribers only when the result changed since its last read,
        or when `stopping()` (the server shuts down). Ends with the last subscriber."""
        if build_id not in self._pollers and build_id in self._subs:
            self._pollers[build_id] = asyncio.create_task(
                self._poll(build_id, load, seconds, stopping)
            )

    async def _poll(
        self,
        build_id: int,
        load: Callable[[], Awaitable[Any]],
        seconds: float,
        stopping: Callable[[], bool],
    ) -> None:
        previous: Any = None
        while True:
            await asyncio.sleep(seconds)
            if not stopping():
                self._reads.pop(build_id, None)  # a fresh read, which the woken streams share
                try:
                    result = await self.shared_read(build_id, load)
                except Exception:  # the streams' own periodic reads cover a failed poll
                    log.warning("polling build %s failed", build_id, exc_info=True)
                    continue
                if result == previous:
                    continue
                previous = result
            for sub in self._subs.get(build_id, ()):
                sub.signal.set()

    async def shared_read(self, build_id: int, load: Callable[[], Awaitable[T]]) -> T:
        """One database read shared by every subscriber of a build that polls within
        `shared_read_seconds` of it (the result is at most that old). A thousand idle streams
        on one build then poll the database once, not a thousand times, per interval. Only for
        the polling fallback: a stream told something changed reads the database itself."""
        result, _ = await self.shared_read_at(build_id, load)
        return result

    async def shared_read_at(
        self, build_id: int, load: Callable[[], Awaitable[T]], since: float | None = None
    ) -> tuple[T, float]:
        """`shared_read`, and when (loop time) the shared read began: it saw everything
        stored before then. `since`: only a read that began at or after that time is shared
        (a stream's first look at its build must not predate its subscription)."""
        now = asyncio.get_running_loop().time()
        entry = self._reads.get(build_id)
        if (
            entry is None
            or now - entry[0] > self._shared_read_seconds
            or (since is not None and entry[0] < since)
        ):
            entry = (now, asyncio.ensure_future(load()))
            self._reads[build_id] = entry
        # Shielded: one subscriber going away must not cancel the read the others wait for.
        result: T = await asyncio.shield(entry[1])
        return result, entry[0]

    async def chunks_read(
        self, build_id: int, after: int, since: float, load: Callable[[], Awaitable[T]]
    ) -> T:
        """One read of a build's chunks after seq `after`, shared by the streams that need
        them at once: a stream reading for itself was one read per stream, one after another
        through `stream_reads` (200 streams connecting on SQLite kept the first live chunks
        waiting ~0.3 s behind them: bench/sse_fanout.py). `since`: the loop time of what told
        the stream to read (its subscription, a poll's read, its build's end); it joins a
        read still waiting for its turn, or one that began at or after `since` (which sees
        every chunk stored before then). `load` reads the database; the turn is taken here.
        Nothing is kept once the read is done."""
        key = (build_id, after)
        read = self._chunk_reads.get(key)
        if read is None or (read.began is not None and read.began < since):
            read = _SharedRead()
            self._chunk_reads[key] = read
            made = read

            async def gated() -> T:
                async with self.stream_reads:
                    made.began = asyncio.get_running_loop().time()
                    return await load()

            def forget(_: asyncio.Future[Any]) -> None:
                if self._chunk_reads.get(key) is made:
                    del self._chunk_reads[key]

            read.result = asyncio.ensure_future(gated())
            read.result.add_done_callback(forget)
        # Shielded, as in shared_read_at: a stream leaving must not cancel the others' read.
        result: T = await asyncio.shield(read.result)
        return result

    @property
    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._subs.values())

    @contextmanager
    def subscribe(self, build_id: int) -> Iterator[Subscription]:
        sub = Subscription(build_id, self.queue_size)
        self._subs[build_id].add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(build_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[build_id]
                    self._reads.pop(build_id, None)
                    poller = self._pollers.pop(build_id, None)
                    if poller is not None:
                        poller.cancel()

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
