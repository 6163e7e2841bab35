from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator

import pytest

from app.queue.memory import MemoryQueue
from tests.support import wait_until


@pytest.fixture
async def queue() -> AsyncIterator[MemoryQueue]:
    q = MemoryQueue(retry_delay=0.01, max_retry_delay=0.04)
    yield q
    await q.stop()


async def test_delivers_in_publish_order(queue: MemoryQueue) -> None:
    seen: list[int] = []

    async def handler(build_id: int) -> None:
        seen.append(build_id)

    await queue.start(handler)
    for build_id in range(1, 21):
        await queue.publish(build_id)
    await wait_until(lambda: len(seen) == 20, "20 deliveries")
    assert seen == list(range(1, 21))


async def test_failing_handler_is_retried_with_backoff_without_blocking_others(
    queue: MemoryQueue, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: dict[int, int] = {}
    handled: list[int] = []

    async def handler(build_id: int) -> None:
        attempts[build_id] = attempts.get(build_id, 0) + 1
        if build_id == 2 and attempts[build_id] <= 4:
            raise RuntimeError("database is down")
        handled.append(build_id)

    caplog.set_level(logging.ERROR, logger="app.queue.memory")
    await queue.start(handler)
    for build_id in (1, 2, 3):
        await queue.publish(build_id)
    await wait_until(lambda: 2 in handled, "build 2 to succeed")

    assert attempts == {1: 1, 2: 5, 3: 1}
    # Build 3 did not wait behind the failing build 2.
    assert handled.index(3) < handled.index(2)
    failures = [r for r in caplog.records if "build 2" in r.getMessage()]
    assert len(failures) == 4
    assert all(r.exc_info is not None for r in failures)
    delays = [float(re.findall(r"retrying in ([\d.]+)s", r.getMessage())[0]) for r in failures]
    assert delays == [0.01, 0.02, 0.04, 0.04]  # doubling, capped at max_retry_delay
    assert await queue.ready()


async def test_ready_follows_start_and_stop(queue: MemoryQueue) -> None:
    async def handler(_build_id: int) -> None:
        return None

    assert not await queue.ready()
    await queue.start(handler)
    assert await queue.ready()
    await queue.stop()
    assert not await queue.ready()


async def test_publish_needs_a_started_queue_and_a_build_id(queue: MemoryQueue) -> None:
    async def handler(_build_id: int) -> None:
        return None

    with pytest.raises(RuntimeError, match="not started"):
        await queue.publish(1)
    await queue.start(handler)
    with pytest.raises(RuntimeError, match="already started"):
        await queue.start(handler)
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="not a build id"):
            await queue.publish(bad)


async def test_stop_cancels_and_awaits_the_consumer(queue: MemoryQueue) -> None:
    entered = asyncio.Event()
    cancelled: list[int] = []

    async def handler(build_id: int) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(build_id)
            raise

    await queue.start(handler)
    await queue.publish(5)
    await asyncio.wait_for(entered.wait(), 10)
    await queue.stop()
    assert cancelled == [5]
    assert not await queue.ready()


async def test_stop_cancels_pending_retries() -> None:
    calls: list[int] = []

    async def handler(build_id: int) -> None:
        calls.append(build_id)
        raise RuntimeError("always broken")

    slow = MemoryQueue(retry_delay=30.0, max_retry_delay=30.0)
    await slow.start(handler)
    await slow.publish(9)
    await wait_until(lambda: calls == [9], "the first attempt")
    await slow.stop()  # would hang or leak a pending task if the 30 s retry were not cancelled
    assert calls == [9]
    assert not await slow.ready()
    await slow.start(handler)  # restartable after stop
    await slow.publish(10)
    await wait_until(lambda: calls == [9, 10], "a delivery after restart")
    await slow.stop()


async def test_prefetch_hands_out_that_many_ids_at_once_in_publish_order() -> None:
    """Up to `prefetch` handlers run at once (a claim waiting on the database does not hold up
    the ids behind it); the next id waits for a free one."""
    q = MemoryQueue(prefetch=2)
    started: list[int] = []
    release = {build_id: asyncio.Event() for build_id in (1, 2, 3)}

    async def handler(build_id: int) -> None:
        started.append(build_id)
        await release[build_id].wait()

    await q.start(handler)
    try:
        for build_id in (1, 2, 3):
            await q.publish(build_id)
        await wait_until(lambda: started == [1, 2], "ids 1 and 2 handled at once")
        assert 3 not in started
        release[2].set()
        await wait_until(lambda: started == [1, 2, 3], "id 3 once a handler is free")
        release[1].set()
        release[3].set()
    finally:
        await q.stop()


def test_prefetch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="prefetch"):
        MemoryQueue(prefetch=0)
