"""StreamBuildLogs over real HTTP (uvicorn on loopback) with a real SSE parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from tests.support import SSEEvent, create, sse_events, wait_for_build, workflow

SLOW = workflow(
    """
    jobs:
      a:
        steps:
          - run: |
              for i in $(seq 1 40); do echo "line $i"; sleep 0.02; done
              while [ ! -e "$GO" ]; do sleep 0.02; done
              for i in $(seq 41 60); do echo "line $i"; sleep 0.02; done
    """
)


async def _collect(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str] | None = None,
    stop_after_logs: int | None = None,
) -> list[SSEEvent]:
    events: list[SSEEvent] = []
    async with client.stream("GET", url, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in sse_events(response):
            events.append(event)
            logs = [e for e in events if e.event == "log"]
            if stop_after_logs is not None and len(logs) >= stop_after_logs:
                break
            if event.event == "end":
                break
    return events


def _lines(events: list[SSEEvent]) -> list[str]:
    return [line for e in events if e.event == "log" for line in e.json()["content"].splitlines()]


def _go_file(settings: Settings, build_id: int) -> Path:
    """The file the SLOW step waits for: in the build's workspace (as `../go` from the job's
    directory), the one place outside the step's own temp dir that an isolated step sees."""
    return Path(settings.workspace_root) / str(build_id) / "go"


async def test_stream_follows_live_then_resumes_without_loss_or_duplicates(
    live_url: str, settings: Settings
) -> None:
    async with httpx.AsyncClient(base_url=f"{live_url}/api/v1", timeout=60) as client:
        body = await create(client, SLOW, variables={"GO": "../go"})
        go = _go_file(settings, body["id"])
        url = f"/builds/{body['id']}/logs/stream"
        first = await _collect(client, url, stop_after_logs=1)
        seen = [e for e in first if e.event == "log"]
        last_id = seen[-1].id
        assert last_id is not None and int(last_id) == seen[-1].json()["seq"]
        go.touch()  # the rest of the output is produced only after the first client left
        rest = await _collect(client, url, headers={"Last-Event-ID": last_id})
        assert rest[-1].event == "end"
        assert rest[-1].json() == {"status": "success"}
        combined = _lines(first) + _lines(rest)
        assert combined == [f"line {i}" for i in range(1, 61)]
        seqs = [int(e.id or 0) for e in [*seen, *(e for e in rest if e.event == "log")]]
        assert seqs == list(range(1, len(seqs) + 1))
        statuses = [e.json() for e in rest if e.event == "status"]
        steps = [
            (s["job_name"], s["step_index"], s["status"]) for s in statuses if s["kind"] == "step"
        ]
        assert ("a", 0, "success") in steps
        assert statuses[-1]["kind"] == "build" and statuses[-1]["status"] == "success"
        # Replay with ?offset= from the database after the build finished.
        middle = seqs[len(seqs) // 2]
        again = await _collect(client, f"{url}?offset={middle}")
        assert [int(e.id or 0) for e in again if e.event == "log"] == seqs[len(seqs) // 2 + 1 :]
        assert again[-1].event == "end"


async def test_replay_of_finished_build_matches_logs(live_url: str) -> None:
    async with httpx.AsyncClient(base_url=f"{live_url}/api/v1", timeout=60) as client:
        body = await create(client, "jobs:\n  a:\n    steps:\n      - run: seq 1 5000\n")
        await wait_for_build(client, body["id"])
        events = await _collect(client, f"/builds/{body['id']}/logs/stream")
        assert _lines(events) == [str(i) for i in range(1, 5001)]
        assert [e.event for e in events][-1] == "end"
        seqs = [int(e.id or 0) for e in events if e.event == "log"]
        offset_events = await _collect(client, f"/builds/{body['id']}/logs/stream?offset=1")
        assert [int(e.id or 0) for e in offset_events if e.event == "log"] == seqs[1:]
        assert offset_events[-1].event == "end"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"sse_ping_seconds": 1.0}


async def test_pings_and_many_subscribers(live_url: str, settings: Settings) -> None:
    async with httpx.AsyncClient(base_url=f"{live_url}/api/v1", timeout=60) as client:
        body = await create(client, SLOW, variables={"GO": "../go"})
        go = _go_file(settings, body["id"])
        url = f"/builds/{body['id']}/logs/stream"
        comments: list[str] = []
        async with client.stream("GET", url) as response:
            async for event in sse_events(response):
                comments.extend(event.comments)
                if comments:
                    break
        assert any("ping" in c for c in comments)
        go.touch()
        results = []
        for _ in range(5):
            results.append(await _collect(client, url))
        for events in results:
            assert _lines(events) == [f"line {i}" for i in range(1, 61)]
