"""The build queue interface: the in-process queue and RabbitMQ implement the same protocol."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Protocol

# Called once per delivered build id. It returns once the build is claimed and handed to the
# scheduler (or found not claimable); the message is acknowledged then. Raising means an
# infrastructure failure: the message is returned to the queue.
BuildHandler = Callable[[int], Awaitable[None]]


class InvalidMessage(ValueError):
    """A message body that is not a build id."""


# A build id message is a few bytes; anything longer is not one, and is never parsed (a deeply
# nested JSON body would otherwise raise RecursionError from inside the consumer).
MAX_MESSAGE_BYTES = 256
_INT64_MAX = 2**63 - 1


def decode_build_id(body: bytes) -> int:
    """Accept `42` or `{"build_id": 42}` (what pipeline_service publishes); a positive 64-bit
    integer. Anything else raises InvalidMessage, never another exception."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"{len(body)} bytes is too long for a build id: {body[:80]!r}")
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidMessage(f"not JSON: {body[:80]!r}") from exc
    if isinstance(value, dict):
        value = value.get("build_id")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _INT64_MAX:
        raise InvalidMessage(f"not a build id: {body[:80]!r}")
    return value


class BuildQueue(Protocol):
    async def start(self, handler: BuildHandler) -> None:
        """Connect and begin consuming; deliveries call `handler`."""
        ...

    async def stop(self) -> None:
        """Stop consuming and close connections."""
        ...

    async def publish(self, build_id: int) -> None:
        """Publish a build id (persistently). Raises on failure; callers keep the build queued."""
        ...

    async def ready(self) -> bool:
        """Whether the queue backend is reachable (for /readyz)."""
        ...
