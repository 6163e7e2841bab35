"""Two real `ci-executor serve` replicas sharing one Postgres database and one RabbitMQ queue.

Postgres-only by nature (SQLite is one process per file). Covers: builds spread across replicas,
takeover after a replica is killed with SIGKILL, cancel and SSE across replicas, and a RabbitMQ
restart with builds in flight.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support import (
    AMQP_URL,
    ServeProcess,
    create,
    sse_events,
    wait_for_build,
    wait_for_output,
    wait_until,
    workflow,
)

pytestmark = pytest.mark.parametrize("backend", ["postgres"])


@pytest.fixture
def replicas(
    serve_factory: Callable[..., ServeProcess], database_url: str, queue_name: str, tmp_path: Path
) -> Callable[[str], ServeProcess]:
    def start(name: str) -> ServeProcess:
        return serve_factory(
            {
                "DATABASE_URL": database_url,
                "QUEUE_URL": AMQP_URL,
                "QUEUE_NAME": queue_name,
                "WORKSPACE_ROOT": str(tmp_path / f"ws-{name}"),
                "LEASE_SECONDS": "3",
                "REQUEUE_AFTER_SECONDS": "2",
                "MAX_CONCURRENT_BUILDS": "2",
                "SHUTDOWN_GRACE_SECONDS": "1",
            },
            name=name,
        )

    return start


def _runner_of(tmp_path: Path, build_id: int) -> str | None:
    for name in ("a", "b"):
        if (tmp_path / f"ws-{name}" / str(build_id)).exists():
            return name
    return None


BLOCKING = workflow(
    """
    jobs:
      slow:
        steps:
          - run: |
              echo started
              while [ ! -e "$GO" ]; do sleep 0.05; done
              for i in $(seq 1 50); do echo "line $i"; sleep 0.01; done
    """
)


async def test_builds_spread_and_sse_and_cancel_across_replicas(
    replicas: Callable[[str], ServeProcess], tmp_path: Path
) -> None:
    a, b = replicas("a"), replicas("b")
    go = tmp_path / "go"
    async with (
        httpx.AsyncClient(base_url=f"{a.url}/api/v1", timeout=30) as ca,
        httpx.AsyncClient(base_url=f"{b.url}/api/v1", timeout=30) as cb,
    ):
        # Four blocking builds and a prefetch/concurrency of 2 per replica: both must take some.
        ids = [(await create(ca, BLOCKING, variables={"GO": str(go)}))["id"] for _ in range(4)]

        async def all_started() -> bool:
            return all(_runner_of(tmp_path, i) for i in ids)

        await wait_until(all_started, timeout=30)
        owners = {i: _runner_of(tmp_path, i) for i in ids}
        assert set(owners.values()) == {"a", "b"}

        # SSE from the replica that does NOT run the build.
        on_a = next(i for i, o in owners.items() if o == "a")
        lines: list[str] = []
        end = None
        async with cb.stream("GET", f"/builds/{on_a}/logs/stream") as response:
            async for event in sse_events(response):
                if event.event == "log":
                    lines.extend(event.json()["content"].splitlines())
                    if lines == ["started"]:
                        go.touch()
                elif event.event == "end":
                    end = event.json()
                    break
        assert lines == ["started"] + [f"line {i}" for i in range(1, 51)]
        assert end == {"status": "success"}
        for build_id in ids:
            assert (await wait_for_build(ca, build_id))["status"] == "success"

        # Cancel on replica B a build that replica A runs.
        go.unlink()
        blocked = [(await create(cb, BLOCKING, variables={"GO": str(go)}))["id"] for _ in range(2)]
        await wait_until(lambda: all(_runner_of(tmp_path, i) for i in blocked), "both runners")
        for build_id in blocked:
            runner = _runner_of(tmp_path, build_id)
            other = cb if runner == "a" else ca
            assert (await other.post(f"/builds/{build_id}/cancel")).status_code == 202
        for build_id in blocked:
            done = await wait_for_build(ca, build_id, timeout=15)
            assert done["status"] == "cancelled"


async def test_killed_replica_is_taken_over(
    replicas: Callable[[str], ServeProcess], tmp_path: Path
) -> None:
    a = replicas("a")
    go = tmp_path / "go"
    async with httpx.AsyncClient(base_url=f"{a.url}/api/v1", timeout=30) as ca:
        body = await create(
            ca,
            workflow(
                """
                jobs:
                  slow:
                    steps:
                      - run: echo started; while [ ! -e "$GO" ]; do sleep 0.05; done
                  after:
                    needs: slow
                    if: always()
                    steps:
                      - run: echo after
                """
            ),
            variables={"GO": str(go)},
        )
        await wait_until(lambda: _runner_of(tmp_path, body["id"]) == "a", "replica a to run it")

        await wait_for_output(ca, body["id"])
    a.stop(signal.SIGKILL)
    b = replicas("b")
    async with httpx.AsyncClient(base_url=f"{b.url}/api/v1", timeout=30) as cb:
        done = await wait_for_build(cb, body["id"], timeout=30)
    slow = next(j for j in done["jobs"] if j["name"] == "slow")
    after = next(j for j in done["jobs"] if j["name"] == "after")
    assert slow["status"] == "error"
    assert "processes are gone" in (slow["error"] or "")
    assert after["status"] == "success"  # the rest of the DAG still ran on the new replica
    assert done["status"] == "error"
    assert "took over build" in b.log()


@pytest.mark.broker_restart
async def test_broker_restart_loses_no_build(
    replicas: Callable[[str], ServeProcess],
) -> None:
    a = replicas("a")
    quick = "jobs:\n  q:\n    steps:\n      - run: echo ok\n"
    async with httpx.AsyncClient(base_url=f"{a.url}/api/v1", timeout=30) as ca:
        before = (await create(ca, quick))["id"]
        assert (await wait_for_build(ca, before))["status"] == "success"
        subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=60)
        try:
            # Publishing fails while the broker is down: the builds stay queued, nothing is lost.
            during = [(await create(ca, quick))["id"] for _ in range(3)]
            ready = await ca.get(f"{a.url}/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["queue"] != "ok"
        finally:
            subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)
            subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=True, timeout=120)
        after = (await create(ca, quick))["id"]
        for build_id in [*during, after]:
            assert (await wait_for_build(ca, build_id, timeout=60))["status"] == "success"

        async def ready_again() -> bool:
            return (await ca.get(f"{a.url}/readyz")).status_code == 200

        await wait_until(ready_again, timeout=30)
