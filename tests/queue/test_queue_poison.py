"""Queue poison (issue 10, item 7): every message that cannot be processed ends in the DLQ, the
consumer never stalls, and readiness tells when this replica stopped consuming."""

from __future__ import annotations

from collections.abc import Callable

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from app.queue.amqp import AmqpQueue
from app.queue.base import InvalidMessage, decode_build_id
from app.queue.memory import MemoryQueue
from tests.queue.test_amqp import Recorder, broker, make_queue, wait_until

__all__ = ["broker", "make_queue"]  # fixtures shared with test_amqp.py

NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    "body",
    [b"9223372036854775808", b'{"build_id": 9223372036854775808}', NESTED, b"1" * 5000],
    ids=["int64-overflow", "json-overflow", "deeply-nested", "long"],
)
def test_decode_refuses_poison_with_invalid_message(body: bytes) -> None:
    with pytest.raises(InvalidMessage):
        decode_build_id(body)


def test_decode_accepts_the_largest_64_bit_id() -> None:
    assert decode_build_id(b"9223372036854775807") == 2**63 - 1


async def _dead_letters(broker: AbstractChannel, dlq_name: str, expected: int) -> list[bytes]:
    dlq = await broker.declare_queue(dlq_name, passive=True)
    dead: list[bytes] = []

    async def collect() -> bool:
        message = await dlq.get(fail=False)
        if message is not None:
            await message.ack()
            dead.append(message.body)
        return len(dead) >= expected

    await wait_until(collect, f"{expected} dead letters")
    return dead


async def test_poison_bodies_are_dead_lettered_and_never_hold_a_prefetch_slot(
    make_queue: Callable[..., AmqpQueue], broker: AbstractChannel, queue_name: str
) -> None:
    recorder = Recorder()
    q = make_queue(prefetch=2)
    await q.start(recorder)
    poison = [NESTED, b"9223372036854775808", NESTED, NESTED, NESTED]
    for body in poison:
        await broker.default_exchange.publish(aio_pika.Message(body), routing_key=queue_name)
    # With the prefetch at 2, four stuck deliveries would stop consumption for good.
    for build_id in (31, 32, 33):
        await q.publish(build_id)
    await wait_until(lambda: sorted(recorder.done) == [31, 32, 33], "the good ids after poison")
    dead = await _dead_letters(broker, q.dlq_name, len(poison))
    assert sorted(dead) == sorted(poison)
    assert await q.ready()


async def test_a_build_that_always_fails_is_dead_lettered_after_bounded_attempts(
    amqp_url: str, broker: AbstractChannel, queue_name: str
) -> None:
    recorder = Recorder()
    recorder.fail[9] = 1000
    q = AmqpQueue(amqp_url, queue_name, prefetch=2, retry_delay=0.01, max_deliveries=4)
    try:
        await q.start(recorder)
        await q.publish(9)
        dead = await _dead_letters(broker, q.dlq_name, 1)
        assert dead == [b"9"]
        assert recorder.calls == [9, 9, 9, 9]
        await q.publish(10)
        await wait_until(lambda: recorder.done == [10], "the next build")
    finally:
        await q.stop()


async def test_memory_queue_gives_up_after_bounded_attempts() -> None:
    recorder = Recorder()
    recorder.fail[3] = 1000
    q = MemoryQueue(retry_delay=0.01, max_retry_delay=0.01, max_deliveries=3)
    await q.start(recorder)
    try:
        await q.publish(3)
        await wait_until(lambda: len(recorder.calls) >= 3, "three attempts")
        await q.publish(4)
        await wait_until(lambda: recorder.done == [4], "the next build")
        assert recorder.calls.count(3) == 3
        assert await q.ready()
    finally:
        await q.stop()
