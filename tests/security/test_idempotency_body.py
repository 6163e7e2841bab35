"""An Idempotency-Key reused with a different body is a 422 (issue 10, item 13), as Stripe does;
the same body with the same key still returns the first build."""

from __future__ import annotations

import httpx

YAML = "jobs:\n  a:\n    steps:\n      - run: echo hi\n"


async def test_reused_key_with_another_body_is_422(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "deploy-42"}
    body = {"pipeline_id": "p1", "workflow_yaml": YAML, "dispatch": False}
    first = await client.post("/builds", json=body, headers=headers)
    assert first.status_code == 201
    same = await client.post("/builds", json=body, headers=headers)
    assert same.status_code == 200
    assert same.json()["id"] == first.json()["id"]
    other = await client.post("/builds", json={**body, "branch": "main"}, headers=headers)
    assert other.status_code == 422
    assert "different request body" in other.json()["detail"]
    listing = (await client.get("/builds")).json()
    assert listing["total"] == 1
