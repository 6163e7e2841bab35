"""`ci-executor serve` as a real process, driven over HTTP and SSE."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support import (
    ServeProcess,
    create,
    sse_events,
    wait_for_build,
    wait_for_output,
    workflow,
)


async def test_serve_end_to_end(
    serve_factory: Callable[..., ServeProcess], database_url: str, tmp_path: Path
) -> None:
    server = serve_factory({"DATABASE_URL": database_url, "WORKSPACE_ROOT": str(tmp_path / "ws")})
    async with httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=30) as client:
        body = await create(
            client,
            workflow(
                """
                jobs:
                  hello:
                    steps:
                      - run: for i in 1 2 3; do echo "hello $i"; sleep 0.1; done
                  after:
                    needs: hello
                    steps:
                      - run: echo done
                """
            ),
        )
        lines: list[str] = []
        ended = None
        async with client.stream("GET", f"/builds/{body['id']}/logs/stream") as response:
            async for event in sse_events(response):
                if event.event == "log":
                    lines.extend(event.json()["content"].splitlines())
                if event.event == "end":
                    ended = event.json()
                    break
        assert lines == ["hello 1", "hello 2", "hello 3", "done"]
        assert ended == {"status": "success"}
        detail = (await client.get(f"/builds/{body['id']}")).json()
        assert [j["status"] for j in detail["jobs"]] == ["success", "success"]

        slow = await create(
            client, "jobs:\n  s:\n    steps:\n      - run: echo started; sleep 300\n"
        )

        await wait_for_output(client, slow["id"])
        assert (await client.post(f"/builds/{slow['id']}/cancel")).status_code == 202
        cancelled = await wait_for_build(client, slow["id"], timeout=20)
        assert cancelled["status"] == "cancelled"
        metrics = (await client.get(f"{server.url}/metrics")).text
        assert 'ci_builds_finished_total{status="success"} 1.0' in metrics
        assert 'ci_builds_finished_total{status="cancelled"} 1.0' in metrics
    # uvicorn re-raises SIGTERM after a graceful shutdown, so the exit status is the signal.
    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log()
    assert "served WITHOUT authentication" in server.log()  # the embedded default warns
    assert "Traceback" not in server.log()


async def test_graceful_shutdown_lets_steps_finish_then_cancels(
    serve_factory: Callable[..., ServeProcess], database_url: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": database_url,
        "WORKSPACE_ROOT": str(tmp_path / "ws"),
        "SHUTDOWN_GRACE_SECONDS": "3",
        "CANCEL_GRACE_SECONDS": "1",
    }
    server = serve_factory(env)
    go = tmp_path / "go"
    async with httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=30) as client:
        short = await create(
            client,
            "jobs:\n  a:\n    steps:\n"
            "      - run: echo up; while [ ! -e $GO ]; do sleep 0.05; done\n",
            variables={"GO": str(go)},
        )
        long = await create(client, "jobs:\n  a:\n    steps:\n      - run: echo up; sleep 300\n")

        for build in (short, long):
            await wait_for_output(client, build["id"])
    server.proc.send_signal(signal.SIGTERM)
    go.touch()  # the short build can finish within the grace period; the long one cannot
    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    restarted = serve_factory(env, name="again")
    async with httpx.AsyncClient(base_url=f"{restarted.url}/api/v1", timeout=30) as client:
        assert (await client.get(f"/builds/{short['id']}")).json()["status"] == "success"
        stopped = (await client.get(f"/builds/{long['id']}")).json()
        assert stopped["status"] == "cancelled"


async def test_sse_stream_ends_cleanly_on_sigterm(
    serve_factory: Callable[..., ServeProcess], database_url: str, tmp_path: Path
) -> None:
    server = serve_factory(
        {
            "DATABASE_URL": database_url,
            "WORKSPACE_ROOT": str(tmp_path / "ws"),
            "SHUTDOWN_GRACE_SECONDS": "1",
        }
    )
    async with httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=30) as client:
        body = await create(client, "jobs:\n  a:\n    steps:\n      - run: echo up; sleep 300\n")
        received: list[str] = []
        async with client.stream("GET", f"/builds/{body['id']}/logs/stream") as response:
            async for event in sse_events(response):
                received.append(event.event)
                if event.event == "log":
                    server.proc.send_signal(signal.SIGTERM)
        # The stream ended without a protocol error (a complete chunked body) instead of hanging.
        assert "log" in received
    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
