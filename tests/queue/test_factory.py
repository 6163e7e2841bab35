from __future__ import annotations

import pytest

from app.queue import AmqpQueue, MemoryQueue, create_queue


def test_memory_scheme_builds_the_in_process_queue() -> None:
    assert isinstance(create_queue("memory://", queue_name="ci.builds", prefetch=4), MemoryQueue)


@pytest.mark.parametrize("url", ["amqp://guest:guest@127.0.0.1:5672/", "amqps://rabbit.example/"])
def test_amqp_schemes_build_the_rabbitmq_queue(url: str) -> None:
    queue = create_queue(url, queue_name="jobs", prefetch=3)
    assert isinstance(queue, AmqpQueue)
    assert queue.queue_name == "jobs"
    assert queue.dlq_name == "jobs.dlq"


@pytest.mark.parametrize("url", ["redis://user:secret@host/0", "localhost:5672", ""])
def test_other_urls_are_refused_without_echoing_secrets(url: str) -> None:
    with pytest.raises(ValueError, match="memory://") as info:
        create_queue(url, queue_name="ci.builds", prefetch=4)
    assert "secret" not in str(info.value)
