from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
def amqp_url() -> str:
    return AMQP_URL


@pytest.fixture
async def queue_name() -> AsyncIterator[str]:
    """A queue name no other test uses; the queue and its DLQ are deleted afterwards."""
    name = f"test.ci.builds.{uuid.uuid4().hex[:12]}"
    yield name
    connection = await aio_pika.connect(AMQP_URL, timeout=30)
    async with connection:
        channel = await connection.channel()
        for queue in (name, f"{name}.dlq"):
            await channel.queue_delete(queue)
