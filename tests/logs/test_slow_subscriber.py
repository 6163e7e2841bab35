"""A subscriber whose live queue overflows falls back to the database and loses nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.support import create, sse_events


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # A live queue of 2 events and a 5 ms flush interval: a client that reads slowly overflows
    # its queue many times over.
    return {"sse_queue_size": 2, "log_flush_interval_ms": 5}


async def test_slow_subscriber_gets_every_chunk(live_url: str) -> None:
    async with httpx.AsyncClient(base_url=f"{live_url}/api/v1", timeout=60) as client:
        body = await create(
            client,
            "jobs:\n  a:\n    steps:\n"
            "      - run: for i in $(seq 1 400); do echo l$i; sleep 0.002; done\n",
        )
        lines: list[str] = []
        seqs: list[int] = []
        async with client.stream("GET", f"/builds/{body['id']}/logs/stream") as response:
            async for event in sse_events(response):
                if event.event == "log":
                    seqs.append(int(event.id or 0))
                    lines.extend(event.json()["content"].splitlines())
                    await asyncio.sleep(0.02)  # a slow consumer (not synchronisation)
                elif event.event == "end":
                    break
        assert lines == [f"l{i}" for i in range(1, 401)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) > 2  # more chunks than the live queue holds
