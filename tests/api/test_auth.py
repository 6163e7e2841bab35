"""API tokens: 401 without a valid token, 403 for read tokens on write routes, open health."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import create, sse_events, wait_for_build

READ = {"Authorization": "Bearer r3ad-token"}
WRITE = {"Authorization": "Bearer wr1te-token"}
YAML = "jobs:\n  a:\n    steps:\n      - run: echo hi\n"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"api_tokens": "frontend:r3ad-token:read,pipeline:wr1te-token:write"}


async def test_tokens_and_roles(client: httpx.AsyncClient) -> None:
    missing = await client.get("/builds")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert (
        await client.get("/builds", headers={"Authorization": "Bearer nope"})
    ).status_code == 401
    assert (await client.get("/builds", headers={"Authorization": "Basic abc"})).status_code == 401
    assert (await client.get("/builds", headers=READ)).status_code == 200

    body = {"pipeline_id": "p", "workflow_yaml": YAML, "dispatch": False}
    forbidden = await client.post("/builds", json=body, headers=READ)
    assert forbidden.status_code == 403
    assert "read-only" in forbidden.json()["detail"]
    created = await client.post("/builds", json=body, headers=WRITE)
    assert created.status_code == 201
    assert created.json()["triggered_by"] == "pipeline"  # defaults to the token's name
    build_id = created.json()["id"]
    for path in (f"/builds/{build_id}/cancel", f"/builds/{build_id}/retry"):
        assert (await client.post(path, headers=READ)).status_code == 403
    assert (
        await client.post(f"/builds/{build_id}/logs", json={"content": "x"}, headers=READ)
    ).status_code == 403
    for path in (f"/builds/{build_id}", f"/builds/{build_id}/logs", f"/builds/{build_id}/logs/raw"):
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers=READ)).status_code == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(f"http://test{path}")).status_code == 200


async def test_sse_accepts_the_bearer_header(live_url: str) -> None:
    async with httpx.AsyncClient(base_url=f"{live_url}/api/v1", timeout=30) as client:
        client.headers.update(WRITE)
        body = await create(client, YAML)
        await wait_for_build(client, body["id"])
        denied = await client.get(
            f"/builds/{body['id']}/logs/stream", headers={"Authorization": "Bearer bad"}
        )
        assert denied.status_code == 401
        async with client.stream(
            "GET", f"/builds/{body['id']}/logs/stream", headers=READ
        ) as response:
            events = [e async for e in sse_events(response)]
        assert [e.event for e in events][-1] == "end"
        assert any(e.event == "log" and "hi" in e.data for e in events)
