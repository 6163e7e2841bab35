"""The embedded build queue (`QUEUE_URL=memory://`): an asyncio.Queue inside the process.

Nothing survives a restart: ids still waiting when the process stops are dropped. That is safe
because the build rows stay `queued` and the periodic sweep publishes them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app.queue.base import BuildHandler

log = logging.getLogger(__name__)


class MemoryQueue:
    """In-process queue; ids are handed to the handler in publish order, up to `prefetch` at
    once (as RabbitMQ delivers up to its prefetch): a claim waiting on the database does not
    hold up the ids behind it.

    A failing handler means the database (or scheduler) is broken, not the id, so the id is
    put back after an exponential backoff, up to `max_deliveries` attempts (then the requeue
    sweep takes over). The retry
    goes to the back of the queue so one failing build does not hold up the ones behind it.
    """

    def __init__(
        self,
        *,
        retry_delay: float = 1.0,
        max_retry_delay: float = 30.0,
        max_deliveries: int = 10,
        prefetch: int = 1,
    ) -> None:
        if retry_delay <= 0 or max_retry_delay < retry_delay:
            raise ValueError("need 0 < retry_delay <= max_retry_delay")
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self._prefetch = prefetch
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._max_deliveries = max(1, max_deliveries)
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._handler: BuildHandler | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._retries: set[asyncio.Task[None]] = set()
        self._handling: set[asyncio.Task[None]] = set()
        self._failures: dict[int, int] = {}

    async def start(self, handler: BuildHandler) -> None:
        if self._consumer is not None:
            raise RuntimeError("MemoryQueue is already started")
        self._handler = handler
        self._consumer = asyncio.create_task(self._consume(), name="memory-queue-consumer")

    async def stop(self) -> None:
        tasks = [*self._retries, *self._handling]
        if self._consumer is not None:
            tasks.append(self._consumer)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._consumer = None
        self._handler = None
        self._retries.clear()
        self._handling.clear()
        self._failures.clear()
        # A fresh queue on every start: ids left over from a previous run are the sweep's job.
        self._queue = asyncio.Queue()

    async def publish(self, build_id: int) -> None:
        if self._consumer is None:
            raise RuntimeError("MemoryQueue.publish() called while the queue is not started")
        if isinstance(build_id, bool) or not isinstance(build_id, int) or build_id <= 0:
            raise ValueError(f"not a build id: {build_id!r}")
        self._queue.put_nowait(build_id)

    async def ready(self) -> bool:
        return self._consumer is not None and not self._consumer.done()

    async def _consume(self) -> None:
        slots = asyncio.Semaphore(self._prefetch)
        while True:
            build_id = await self._queue.get()
            await slots.acquire()
            task = asyncio.create_task(self._handle(build_id, slots), name=f"deliver-{build_id}")
            self._handling.add(task)
            task.add_done_callback(self._handling.discard)

    async def _handle(self, build_id: int, slots: asyncio.Semaphore) -> None:
        handler = self._handler
        assert handler is not None
        try:
            await handler(build_id)
        except Exception:
            self._schedule_retry(build_id)
        else:
            self._failures.pop(build_id, None)
        finally:
            slots.release()

    def _schedule_retry(self, build_id: int) -> None:
        attempt = self._failures.get(build_id, 0) + 1
        self._failures[build_id] = attempt
        if attempt >= self._max_deliveries:
            # No DLQ in process: drop it. The build row stays queued, so the requeue sweep
            # publishes it again once whatever broke is fixed.
            self._failures.pop(build_id, None)
            log.exception(
                "build queue handler failed %d times for build %d; dropped", attempt, build_id
            )
            return
        delay = min(self._retry_delay * 2 ** (attempt - 1), self._max_retry_delay)
        log.exception(
            "build queue handler failed for build %d (attempt %d); retrying in %gs",
            build_id,
            attempt,
            delay,
        )
        task = asyncio.create_task(self._requeue_later(build_id, delay), name=f"requeue-{build_id}")
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _requeue_later(self, build_id: int, delay: float) -> None:
        await asyncio.sleep(delay)
        self._queue.put_nowait(build_id)
