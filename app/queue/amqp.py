"""RabbitMQ build queue (`QUEUE_URL=amqp://...`) on aio-pika robust connections.

Two connections, one for consuming and one for publishing: RabbitMQ throttles a publishing
connection under memory pressure, and acks sharing that connection would stall with it.

Recovery after a broker restart is aio-pika's: a robust connection reconnects, reopens its
channels, re-declares the queues declared through them (so a broker that lost its data gets them
back) and re-registers the consumer. tests/queue/test_amqp.py restarts a real broker to prove it.
Deliveries that were unacknowledged when the connection dropped are requeued by the broker and
arrive again; the handler's claim is a conditional update, so that is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, AMQPError, ChannelPreconditionFailed
from yarl import URL

from app.queue.base import BuildHandler, InvalidMessage, decode_build_id

log = logging.getLogger(__name__)


class QueueConnectError(RuntimeError):
    """The broker could not be reached (or refused us) at start-up."""


class QueueConfigError(RuntimeError):
    """A queue exists on the broker with arguments that differ from ours."""


class QueuePublishError(RuntimeError):
    """A build id could not be published; the caller leaves the build queued for the sweep.

    After a timeout the broker may still have taken the message, so a later re-publish can
    deliver the id twice. Consumers claim builds with a conditional update, so that is harmless.
    """


ATTEMPTS_HEADER = "x-ci-attempts"


def _attempts(message: AbstractIncomingMessage) -> int:
    """Failed deliveries so far: our own header, or a quorum queue's x-delivery-count."""
    headers = message.headers or {}
    counts = [headers.get(ATTEMPTS_HEADER), headers.get("x-delivery-count")]
    return max(
        (int(c) for c in counts if isinstance(c, int) and not isinstance(c, bool)), default=0
    )


def _redact(url: str) -> str:
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else url


class AmqpQueue:
    def __init__(
        self,
        url: str,
        queue_name: str = "ci.builds",
        prefetch: int = 4,
        dlq_name: str | None = None,
        *,
        connect_timeout: float = 10.0,
        publish_timeout: float = 5.0,
        retry_delay: float = 1.0,
        reconnect_interval: float = 2.0,
        stop_grace: float = 10.0,
        max_deliveries: int = 10,
    ) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self._url = url
        self._queue_name = queue_name
        self._dlq_name = dlq_name if dlq_name is not None else f"{queue_name}.dlq"
        self._prefetch = prefetch
        self._connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        self._retry_delay = retry_delay
        self._reconnect_interval = reconnect_interval
        self._stop_grace = stop_grace
        self._max_deliveries = max(1, max_deliveries)

        self._handler: BuildHandler | None = None
        self._consume_conn: AbstractRobustConnection | None = None
        self._publish_conn: AbstractRobustConnection | None = None
        self._consume_channel: AbstractRobustChannel | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._queue: AbstractRobustQueue | None = None
        self._consumer_tag: str | None = None
        # Our own tasks, not aiormq's: aiormq cancels its consumer tasks when the channel
        # closes, which would interrupt a handler between claiming a build and handing it on.
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def queue_name(self) -> str:
        return self._queue_name

    @property
    def dlq_name(self) -> str:
        return self._dlq_name

    @property
    def queue_arguments(self) -> dict[str, str]:
        # The default exchange ("") routes by queue name, so no exchange has to be declared.
        return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": self._dlq_name}

    async def start(self, handler: BuildHandler) -> None:
        if self._handler is not None:
            raise RuntimeError("AmqpQueue is already started")
        self._handler = handler
        try:
            self._consume_conn = await self._connect("consumer")
            self._publish_conn = await self._connect("publisher")
            channel = await self._consume_conn.channel(publisher_confirms=False)
            self._consume_channel = channel
            await channel.set_qos(prefetch_count=self._prefetch)
            await self._declare(channel, self._dlq_name, None)
            self._queue = await self._declare(channel, self._queue_name, self.queue_arguments)
            # A returned (unroutable) message raises instead of vanishing: publishing to a
            # queue that is gone must not look like success.
            self._publish_channel = await self._publish_conn.channel(
                publisher_confirms=True, on_return_raises=True
            )
            self._consumer_tag = await self._queue.consume(self._on_message)
        except BaseException:
            await self._close()
            raise
        log.info(
            "consuming RabbitMQ queue %r (dead letters to %r, prefetch %d) at %s",
            self._queue_name,
            self._dlq_name,
            self._prefetch,
            _redact(self._url),
        )

    async def stop(self) -> None:
        # Stop deliveries first, then give in-flight handlers a chance to finish and ack, so a
        # graceful shutdown does not make the broker redeliver builds we already claimed.
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await asyncio.wait_for(
                    self._queue.cancel(self._consumer_tag), timeout=self._publish_timeout
                )
            except (TimeoutError, *CONNECTION_EXCEPTIONS) as exc:
                log.warning("could not cancel the RabbitMQ consumer cleanly: %r", exc)
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self._stop_grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._close()

    async def publish(self, build_id: int) -> None:
        channel = self._publish_channel
        if channel is None:
            raise RuntimeError("AmqpQueue.publish() called while the queue is not started")
        if isinstance(build_id, bool) or not isinstance(build_id, int) or build_id <= 0:
            raise ValueError(f"not a build id: {build_id!r}")
        message = aio_pika.Message(
            str(build_id).encode(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
        )
        what = f"build {build_id} to RabbitMQ queue {self._queue_name!r}"
        try:
            # The outer timeout also covers waiting for a reconnect, which the robust channel
            # would otherwise do for as long as the broker is away.
            async with asyncio.timeout(self._publish_timeout):
                await channel.default_exchange.publish(message, routing_key=self._queue_name)
        except TimeoutError as exc:
            raise QueuePublishError(
                f"publishing {what} timed out after {self._publish_timeout}s "
                f"(broker at {_redact(self._url)} unreachable?)"
            ) from exc
        except CONNECTION_EXCEPTIONS as exc:
            raise QueuePublishError(f"publishing {what} failed: {exc!r}") from exc

    async def ready(self) -> bool:
        if self._consumer_tag is None:
            return False  # not consuming: this replica would never run a build
        for conn in (self._consume_conn, self._publish_conn):
            if conn is None or conn.is_closed or not conn.connected.is_set():
                return False
            if conn.transport is None or conn.transport.connection.is_closed:
                return False
        return all(
            channel is not None and not channel.is_closed
            for channel in (self._consume_channel, self._publish_channel)
        )

    async def _connect(self, role: str) -> AbstractRobustConnection:
        # A reconnect_interval in the URL wins; aio-pika's default (5 s) is slow to recover.
        interval = (
            None if "reconnect_interval" in URL(self._url).query else self._reconnect_interval
        )
        try:
            return await aio_pika.connect_robust(
                self._url,
                timeout=self._connect_timeout,
                client_properties={"connection_name": f"ci-executor {role}"},
                reconnect_interval=interval,
            )
        except (TimeoutError, *CONNECTION_EXCEPTIONS) as exc:
            raise QueueConnectError(
                f"cannot connect to RabbitMQ at {_redact(self._url)}: {exc!r}"
            ) from exc

    async def _declare(
        self,
        channel: AbstractRobustChannel,
        name: str,
        arguments: dict[str, str] | None,
    ) -> AbstractRobustQueue:
        try:
            return await channel.declare_queue(
                name, durable=True, arguments=arguments, timeout=self._connect_timeout
            )
        except ChannelPreconditionFailed as exc:
            raise QueueConfigError(
                f"RabbitMQ queue {name!r} already exists with different settings than "
                f"ci-executor declares (durable=True, arguments={arguments or {}}): {exc}. "
                f"Delete it (`rabbitmqctl delete_queue {name}`, after draining it) or "
                "configure another queue name."
            ) from exc

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self._process(message), name="amqp-build-delivery")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        # Nothing may escape: an unsettled delivery holds a prefetch slot for good, and a few of
        # those stop consumption altogether.
        try:
            await self._handle(message)
        except Exception:
            log.exception("unexpected error processing a delivery from %r", self._queue_name)
            await self._settle(message, "reject", "a delivery that broke the consumer")

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            build_id = decode_build_id(message.body)
        except InvalidMessage as exc:
            log.error(
                "dead-lettering a message from %r to %r (message_id=%s): %s",
                self._queue_name,
                self._dlq_name,
                message.message_id,
                exc,
            )
            await self._settle(message, "reject", "an invalid message")
            return
        handler = self._handler
        if handler is None:
            # A delivery that raced stop(): leave it unacked, closing the channel requeues it.
            return
        try:
            await handler(build_id)
        except Exception:
            attempts = _attempts(message) + 1
            if attempts >= self._max_deliveries:
                log.exception(
                    "handling build %d failed %d times; dead-lettering it to %r (the requeue "
                    "sweep publishes it again if it is still queued)",
                    build_id,
                    attempts,
                    self._dlq_name,
                )
                await self._settle(message, "reject", f"build {build_id}")
                return
            log.exception(
                "handling build %d failed (attempt %d of %d); returning it to %r in %gs",
                build_id,
                attempts,
                self._max_deliveries,
                self._queue_name,
                self._retry_delay,
            )
            # The delay keeps a broken database from turning redelivery into a busy loop.
            await asyncio.sleep(self._retry_delay)
            await self._retry(message, build_id, attempts)
            return
        await self._settle(message, "ack", f"build {build_id}")

    async def _retry(self, message: AbstractIncomingMessage, build_id: int, attempts: int) -> None:
        """Requeue with the attempt count carried in a header (classic queues count nothing):
        publish a copy, then ack the original. If that publish fails, a plain nack requeues."""
        channel = self._publish_channel
        try:
            if channel is None:
                raise RuntimeError("not started")
            copy = aio_pika.Message(
                message.body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type=message.content_type,
                headers={**(message.headers or {}), ATTEMPTS_HEADER: attempts},
            )
            async with asyncio.timeout(self._publish_timeout):
                await channel.default_exchange.publish(copy, routing_key=self._queue_name)
        except (TimeoutError, RuntimeError, *CONNECTION_EXCEPTIONS) as exc:
            log.warning("could not requeue build %d with its attempt count: %r", build_id, exc)
            await self._settle(message, "nack", f"build {build_id}")
            return
        await self._settle(message, "ack", f"build {build_id}")

    async def _settle(
        self,
        message: AbstractIncomingMessage,
        action: Literal["ack", "nack", "reject"],
        what: str,
    ) -> None:
        try:
            if action == "ack":
                await message.ack()
            elif action == "nack":
                await message.nack(requeue=True)
            else:
                await message.reject(requeue=False)
        except (AMQPError, ConnectionError, RuntimeError) as exc:
            # The delivery's channel died (broker restart, network). The broker already
            # requeued the message, so it comes back on the new channel.
            log.warning(
                "could not %s %s on %r, the broker will redeliver it: %r",
                action,
                what,
                self._queue_name,
                exc,
            )

    async def _close(self) -> None:
        for conn in (self._consume_conn, self._publish_conn):
            if conn is not None:
                try:
                    await conn.close()
                except CONNECTION_EXCEPTIONS as exc:
                    log.warning("error closing RabbitMQ connection: %r", exc)
        self._handler = None
        self._consume_conn = None
        self._publish_conn = None
        self._consume_channel = None
        self._publish_channel = None
        self._queue = None
        self._consumer_tag = None
