"""Build queue backends, picked by the scheme of `QUEUE_URL`."""

from __future__ import annotations

from urllib.parse import urlsplit

from app.queue.amqp import AmqpQueue
from app.queue.base import BuildHandler, BuildQueue, InvalidMessage, decode_build_id
from app.queue.memory import MemoryQueue

__all__ = [
    "AmqpQueue",
    "BuildHandler",
    "BuildQueue",
    "InvalidMessage",
    "MemoryQueue",
    "create_queue",
    "decode_build_id",
]


def create_queue(
    url: str, *, queue_name: str, prefetch: int, max_deliveries: int = 10
) -> BuildQueue:
    """`memory://` → the in-process queue; `amqp://` / `amqps://` → RabbitMQ."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryQueue(max_deliveries=max_deliveries, prefetch=prefetch)
    if scheme in ("amqp", "amqps"):
        return AmqpQueue(
            url, queue_name=queue_name, prefetch=prefetch, max_deliveries=max_deliveries
        )
    # Only the scheme is echoed: the rest of the URL may carry a password.
    raise ValueError(
        f"unsupported QUEUE_URL scheme {scheme!r}: expected memory:// (in-process queue) "
        "or amqp:// / amqps:// (RabbitMQ)"
    )
