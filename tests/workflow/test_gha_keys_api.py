"""Issue 11 keys end to end: platform keys are recorded and shown, services are refused locally."""

from __future__ import annotations

import httpx

from tests.helpers import create, job, wait_for_build, workflow


async def test_runs_on_environment_and_event_are_shown(client: httpx.AsyncClient) -> None:
    body = await create(
        client,
        workflow(
            """
            on: [push]
            permissions: read-all
            concurrency: ci
            jobs:
              build:
                runs-on: [self-hosted, linux]
                environment: {name: staging, url: "https://example.com"}
                permissions: {contents: read}
                steps: [{run: echo ok}]
            """
        ),
        event_name="workflow_dispatch",
        event={"inputs": {"level": "3"}},
    )
    assert body["event_name"] == "workflow_dispatch"
    assert body["event"] == {"inputs": {"level": "3"}}
    build = job(body, "build")
    assert build["runs_on"] == ["self-hosted", "linux"]
    assert build["environment"] == {"name": "staging", "url": "https://example.com"}
    done = await wait_for_build(client, body["id"])
    assert done["status"] == "success"


async def test_local_runner_refuses_services_clearly(client: httpx.AsyncClient) -> None:
    body = await create(
        client,
        workflow(
            """
            jobs:
              db:
                services:
                  postgres: {image: "postgres:16"}
                steps: [{run: echo never}]
            """
        ),
    )
    done = await wait_for_build(client, body["id"])
    db = job(done, "db")
    assert db["status"] == "failed"
    assert "services" in db["error"] and "kubernetes runner" in db["error"]
    assert [s["status"] for s in db["steps"]] == ["skipped"]


async def test_oversized_event_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/builds",
        json={
            "pipeline_id": "p",
            "triggered_by": "t",
            "workflow_yaml": "jobs:\n  a:\n    steps: [{run: x}]\n",
            "event": {"big": "x" * 300_000},
        },
    )
    assert response.status_code == 422
    assert "event must be at most" in response.text
