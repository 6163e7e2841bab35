"""Against the real RabbitMQ at 127.0.0.1:5672 (shared with other tests: unique queue names)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection

from app.queue.amqp import AmqpQueue, QueueConfigError, QueueConnectError, QueuePublishError
from tests.support import wait_until


class Recorder:
    """A handler that records ids; optional hooks make chosen calls block or fail."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.done: list[int] = []
        self.fail: dict[int, int] = {}  # build id -> how many calls still fail
        self.gate: asyncio.Event | None = None  # when set, every call waits for it
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, build_id: int) -> None:
        self.calls.append(build_id)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail.get(build_id, 0) > 0:
                self.fail[build_id] -= 1
                raise RuntimeError(f"claim of build {build_id} failed: database is down")
            self.done.append(build_id)
        finally:
            self.in_flight -= 1


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[AbstractChannel]:
    """A plain (non-robust) channel for looking at queues from outside the code under test."""
    connection: AbstractConnection = await aio_pika.connect(amqp_url, timeout=30)
    async with connection:
        yield await connection.channel()


@pytest.fixture
async def make_queue(amqp_url: str, queue_name: str) -> AsyncIterator[Callable[..., AmqpQueue]]:
    created: list[AmqpQueue] = []

    def make(
        prefetch: int = 4,
        retry_delay: float = 0.05,
        stop_grace: float = 2.0,
        publish_timeout: float = 5.0,
        reconnect_interval: float = 2.0,
    ) -> AmqpQueue:
        q = AmqpQueue(
            amqp_url,
            queue_name,
            prefetch=prefetch,
            retry_delay=retry_delay,
            stop_grace=stop_grace,
            publish_timeout=publish_timeout,
            reconnect_interval=reconnect_interval,
        )
        created.append(q)
        return q

    yield make
    for q in created:
        await q.stop()


async def ready_count(channel: AbstractChannel, name: str) -> int:
    declared = await channel.declare_queue(name, passive=True)
    count = declared.declaration_result.message_count
    assert count is not None
    return count


async def rabbitmqctl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"rabbitmqctl {' '.join(args)} failed: {out.decode()}"
    return out.decode()


async def test_publish_then_consume_and_ack(
    make_queue: Callable[..., AmqpQueue], broker: AbstractChannel, queue_name: str
) -> None:
    recorder = Recorder()
    q = make_queue()
    await q.start(recorder)
    assert await q.ready()
    for build_id in (11, 12, 13):
        await q.publish(build_id)
    await wait_until(lambda: sorted(recorder.done) == [11, 12, 13], "three deliveries")
    await q.stop()
    assert not await q.ready()
    # Unacked deliveries would be back in the queue now that the consumer is gone.
    assert await ready_count(broker, queue_name) == 0
    assert recorder.calls == recorder.done


async def test_json_body_from_pipeline_service_is_consumed(
    make_queue: Callable[..., AmqpQueue], broker: AbstractChannel, queue_name: str
) -> None:
    recorder = Recorder()
    q = make_queue()
    await q.start(recorder)
    await broker.default_exchange.publish(
        aio_pika.Message(b'{"build_id": 42}'), routing_key=queue_name
    )
    await wait_until(lambda: recorder.done == [42], "build 42")


async def test_body_that_is_not_a_build_id_goes_to_the_dlq(
    make_queue: Callable[..., AmqpQueue],
    broker: AbstractChannel,
    queue_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="app.queue.amqp")
    recorder = Recorder()
    q = make_queue()
    await q.start(recorder)
    for body in (b"not-a-build", b"-1", b"{}"):
        await broker.default_exchange.publish(aio_pika.Message(body), routing_key=queue_name)
    await q.publish(7)
    await wait_until(lambda: recorder.done == [7], "the valid id after the invalid ones")

    dlq = await broker.declare_queue(q.dlq_name, passive=True)
    dead: list[bytes] = []

    async def collect() -> bool:
        message = await dlq.get(fail=False)
        if message is not None:
            await message.ack()
            dead.append(message.body)
            deaths = message.headers["x-death"]
            assert isinstance(deaths, list)
            assert len(deaths) == 1
            death = deaths[0]
            assert isinstance(death, dict)
            assert death["reason"] == "rejected"
            assert death["queue"] == queue_name
        return len(dead) == 3

    await wait_until(collect, "three dead letters")
    assert dead == [b"not-a-build", b"-1", b"{}"]
    assert recorder.calls == [7]
    assert sum("dead-lettering" in r.getMessage() for r in caplog.records) == 3


async def test_handler_exception_redelivers_the_build(
    make_queue: Callable[..., AmqpQueue], broker: AbstractChannel, queue_name: str
) -> None:
    recorder = Recorder()
    recorder.fail[5] = 2
    q = make_queue()
    await q.start(recorder)
    await q.publish(5)
    await wait_until(lambda: recorder.done == [5], "build 5 to succeed")
    assert recorder.calls == [5, 5, 5]
    await q.stop()
    assert await ready_count(broker, queue_name) == 0
    dlq = await broker.declare_queue(f"{queue_name}.dlq", passive=True)
    assert dlq.declaration_result.message_count == 0  # requeued, never dead-lettered


async def test_queues_are_durable_and_messages_persistent(
    make_queue: Callable[..., AmqpQueue], broker: AbstractChannel, queue_name: str
) -> None:
    recorder = Recorder()
    recorder.gate = asyncio.Event()  # never set: the delivery stays unacked
    q = make_queue(stop_grace=0.1)
    await q.start(recorder)
    await q.publish(77)
    await wait_until(lambda: recorder.calls == [77], "the delivery")
    await q.stop()  # the unacked message goes back to the queue, where we can look at it

    message = await (await broker.declare_queue(queue_name, passive=True)).get(fail=False)
    assert message is not None
    assert message.body == b"77"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    await message.ack()

    listing = await rabbitmqctl(
        "list_queues", "-q", "--no-table-headers", "name", "durable", "arguments"
    )
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in listing.splitlines() if line}
    assert rows[queue_name][0] == "true"
    assert "x-dead-letter-routing-key" in rows[queue_name][1]
    assert f"{queue_name}.dlq" in rows[queue_name][1]
    assert rows[f"{queue_name}.dlq"][0] == "true"


async def test_prefetch_bounds_in_flight_handlers(
    make_queue: Callable[..., AmqpQueue], broker: AbstractChannel, queue_name: str
) -> None:
    recorder = Recorder()
    recorder.gate = asyncio.Event()
    q = make_queue(prefetch=2)
    await q.start(recorder)
    for build_id in range(1, 6):
        await q.publish(build_id)

    # The broker holding 3 ready messages while 2 handlers run means it delivered only 2.
    async def two_running_three_waiting() -> bool:
        return recorder.in_flight == 2 and await ready_count(broker, queue_name) == 3

    await wait_until(two_running_three_waiting, "2 deliveries in flight and 3 held back")
    assert len(recorder.calls) == 2

    recorder.gate.set()
    await wait_until(lambda: sorted(recorder.done) == [1, 2, 3, 4, 5], "all five builds")
    assert recorder.max_in_flight == 2


async def test_existing_queue_with_other_arguments_is_reported(
    make_queue: Callable[..., AmqpQueue], broker: AbstractChannel, queue_name: str
) -> None:
    await broker.declare_queue(queue_name, durable=True)  # no dead-letter arguments
    q = make_queue()
    with pytest.raises(QueueConfigError, match=queue_name) as info:
        await q.start(Recorder())
    assert "different settings" in str(info.value)
    assert "x-dead-letter-routing-key" in str(info.value)
    assert not await q.ready()


async def test_unreachable_broker_fails_fast_and_clearly(queue_name: str) -> None:
    q = AmqpQueue("amqp://guest:secret@127.0.0.1:1/", queue_name, connect_timeout=5)
    with pytest.raises(QueueConnectError, match=r"127\.0\.0\.1:1\b") as info:
        await q.start(Recorder())
    assert "secret" not in str(info.value)
    assert not await q.ready()
    with pytest.raises(RuntimeError, match="not started"):
        await q.publish(1)


async def test_deleted_queue_is_redeclared_and_consumed_again(
    make_queue: Callable[..., AmqpQueue], broker: AbstractChannel, queue_name: str
) -> None:
    # What a broker that lost its data looks like to a running consumer: the broker cancels
    # the consumer. aio-pika re-declares the queue (with our arguments) and consumes again.
    recorder = Recorder()
    q = make_queue()
    await q.start(recorder)
    await q.publish(1)
    await wait_until(lambda: recorder.done == [1], "build 1")
    await broker.queue_delete(queue_name)

    async def published() -> bool:
        try:
            await q.publish(2)
        except QueuePublishError:
            return False  # unroutable until the queue is back: refused, not silently dropped
        return True

    await wait_until(published, "publishing to work again")
    await wait_until(lambda: recorder.done == [1, 2], "build 2 from the re-declared queue")
    await broker.default_exchange.publish(aio_pika.Message(b"junk"), routing_key=queue_name)
    dlq = await broker.declare_queue(q.dlq_name, passive=True)

    async def dead_lettered() -> bool:
        message = await dlq.get(fail=False)
        if message is None:
            return False
        await message.ack()
        return message.body == b"junk"

    await wait_until(dead_lettered, "the re-declared queue to keep its dead-letter arguments")


@pytest.mark.broker_restart
@pytest.mark.timeout(180)
async def test_consumer_survives_a_real_broker_restart(
    make_queue: Callable[..., AmqpQueue], amqp_url: str, queue_name: str
) -> None:
    recorder = Recorder()
    first_call_of_100 = asyncio.Event()
    release_100 = asyncio.Event()

    async def handler(build_id: int) -> None:
        if build_id == 100 and not first_call_of_100.is_set():
            first_call_of_100.set()
            await release_100.wait()  # in flight while the broker goes away
        await recorder(build_id)

    q = make_queue(prefetch=1, reconnect_interval=0.5, publish_timeout=2.0)
    await q.start(handler)
    await q.publish(100)
    await asyncio.wait_for(first_call_of_100.wait(), 15)
    await q.publish(101)  # prefetch=1: stays ready in the queue, never delivered before the stop

    async def one_waiting() -> bool:
        connection = await aio_pika.connect(amqp_url, timeout=10)
        async with connection:
            return await ready_count(await connection.channel(), queue_name) == 1

    await wait_until(one_waiting, "build 101 waiting in the queue")

    try:
        await rabbitmqctl("stop_app")
        await wait_until(lambda: _not(q.ready()), "ready() to turn false")
        with pytest.raises(QueuePublishError, match=queue_name):
            await q.publish(102)
        release_100.set()  # its ack now fails: the broker must deliver it again
        await wait_until(lambda: recorder.calls == [100], "the in-flight handler to return")
    finally:
        await rabbitmqctl("start_app")
        await rabbitmqctl("await_startup")

    await wait_until(q.ready, "the robust connection to come back", timeout=60)
    await wait_until(
        lambda: sorted(recorder.done) == [100, 100, 101],
        "build 100 (in flight) and 101 (queued) after the restart",
        timeout=60,
    )
    await q.publish(103)
    await wait_until(lambda: recorder.done[-1:] == [103], "a build published after the restart")
    assert sorted(recorder.done) == [100, 100, 101, 103]


async def _not(value: Awaitable[bool]) -> bool:
    return not await value
