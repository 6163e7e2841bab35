"""Shared chunk reads of the live hub (app/logs/hub.py `LiveHub.chunks_read`): streams that need
the same chunks at once share one read, but never one that began before what told them to read
(it might not hold what they were told of)."""

from __future__ import annotations

import asyncio

from app.logs.hub import LiveHub


class Loads:
    """A load per call, each answered when the test says so."""

    def __init__(self) -> None:
        self.started: list[asyncio.Future[list[int]]] = []
        self.began = asyncio.Event()

    async def load(self) -> list[int]:
        answer: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self.started.append(answer)
        self.began.set()
        return await answer


async def _until(condition: asyncio.Event) -> None:
    await asyncio.wait_for(condition.wait(), 5)
    condition.clear()


async def test_reads_waiting_for_their_turn_are_joined_whatever_their_since() -> None:
    hub = LiveHub(stream_reads=1)
    loads = Loads()
    loop = asyncio.get_running_loop()
    await hub.stream_reads.acquire()  # every read waits for its turn
    first = asyncio.create_task(hub.chunks_read(1, 0, loop.time(), loads.load))
    await asyncio.sleep(0)  # one pass of the loop: its read is made and waits at the gate
    later = [
        asyncio.create_task(hub.chunks_read(1, 0, loop.time() + i, loads.load)) for i in range(3)
    ]
    other_seq = asyncio.create_task(hub.chunks_read(1, 5, loop.time(), loads.load))
    await asyncio.sleep(0)  # one pass of the loop: each task decides, the gate still held
    assert not loads.started
    hub.stream_reads.release()
    await _until(loads.began)
    loads.started[0].set_result([1, 2])
    assert await first == [1, 2]
    assert [await task for task in later] == [[1, 2]] * 3
    await _until(loads.began)  # the read after seq 5 is another read
    loads.started[1].set_result([6])
    assert await other_seq == [6]
    assert len(loads.started) == 2


async def test_a_read_that_began_before_since_is_not_joined_and_none_is_kept() -> None:
    hub = LiveHub(stream_reads=2)
    loads = Loads()
    loop = asyncio.get_running_loop()
    told = loop.time()
    early = asyncio.create_task(hub.chunks_read(1, 0, told, loads.load))
    await _until(loads.began)  # it has its turn: it began at or after `told`
    joined = asyncio.create_task(hub.chunks_read(1, 0, told, loads.load))
    newer = asyncio.create_task(hub.chunks_read(1, 0, loop.time() + 1, loads.load))
    await _until(loads.began)  # `newer` was told after the first read began: its own read
    assert len(loads.started) == 2
    loads.started[0].set_result([1])
    loads.started[1].set_result([1, 2])
    assert (await early, await joined, await newer) == ([1], [1], [1, 2])
    again = asyncio.create_task(hub.chunks_read(1, 0, told, loads.load))
    await _until(loads.began)  # done reads are forgotten: a fresh one
    loads.started[2].set_result([1, 2, 3])
    assert await again == [1, 2, 3]
