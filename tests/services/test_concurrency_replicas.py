"""Two real `ci-executor serve` replicas sharing Postgres and RabbitMQ race on one concurrency
group: never two builds of the group run at once, the waiter runs when the group frees on the
other replica (woken by the release, not by the requeue sweep), and replaced builds say so."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support import AMQP_URL, ServeProcess, create, ts, wait_for_build, workflow

pytestmark = pytest.mark.parametrize("backend", ["postgres"])
REPLACED = "Canceling since a higher priority waiting request for 'deploy' exists"

# The step's sleep is the work, widening the window in which two runs would overlap.
WORK = workflow(
    """
    concurrency: deploy
    jobs:
      deploy:
        steps:
          - run: echo "deploying $CI_BUILD_ID"; sleep 0.4
    """
)


async def test_replicas_never_run_two_builds_of_a_group(
    serve_factory: Callable[..., ServeProcess],
    database_url: str,
    queue_name: str,
    tmp_path: Path,
) -> None:
    def start(name: str) -> ServeProcess:
        return serve_factory(
            {
                "DATABASE_URL": database_url,
                "QUEUE_URL": AMQP_URL,
                "QUEUE_NAME": queue_name,
                "WORKSPACE_ROOT": str(tmp_path / f"ws-{name}"),
                # Longer than the test may take: a lost wake-up would not be hidden by the sweep.
                "REQUEUE_AFTER_SECONDS": "300",
                "MAX_CONCURRENT_BUILDS": "4",
                "SHUTDOWN_GRACE_SECONDS": "1",
            },
            name=name,
        )

    a, b = start("a"), start("b")
    async with (
        httpx.AsyncClient(base_url=f"{a.url}/api/v1", timeout=30) as ca,
        httpx.AsyncClient(base_url=f"{b.url}/api/v1", timeout=30) as cb,
    ):
        ids: list[int] = []
        for round_ in range(4):
            # Two creates at once, one through each replica, while the group may be held.
            created = await asyncio.gather(create(ca, WORK), create(cb, WORK))
            ids.extend(c["id"] for c in created)
            if round_ % 2:
                await wait_for_build(ca, ids[-1])
        done = [await wait_for_build(ca, i) for i in ids]

    ran = sorted(
        (ts(d["started_at"]), ts(d["finished_at"]), d["id"]) for d in done if d["started_at"]
    )
    for (_, end, first), (begin, _, second) in itertools.pairwise(ran):
        assert begin >= end, f"builds {first} and {second} of one group overlapped"
    statuses = {d["id"]: d["status"] for d in done}
    assert set(statuses.values()) <= {"success", "cancelled"}, statuses
    assert len(ran) >= 2, statuses
    assert all(d["status"] == "success" for d in done if d["started_at"]), statuses
    for d in done:
        if d["status"] == "cancelled":
            assert (d["error"], d["started_at"]) == (REPLACED, None)
    # Nothing came after the last round: one of its two builds was the last waiter and ran.
    assert "success" in {statuses[i] for i in ids[-2:]}, statuses
