"""POST /builds without workflow_yaml reads the YAML from a pipeline_service stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support import free_port, uvicorn_server

PIPELINES: dict[str, Any] = {
    "good": {"id": "good", "workflow_yaml": "jobs:\n  a:\n    steps:\n      - run: echo from-ps\n"},
    "bad-yaml": {"id": "bad-yaml", "workflow_yaml": "jobs:\n  a:\n    steps: []\n"},
    "no-field": {"id": "no-field"},
}


async def _pipeline(request: Request) -> Response:
    pid = request.path_params["pid"]
    if pid == "boom":
        return Response("kaput", status_code=503)
    if pid not in PIPELINES:
        return JSONResponse({"detail": "not found"}, status_code=404)
    return JSONResponse(PIPELINES[pid])


@pytest.fixture
async def pipeline_service() -> AsyncIterator[str]:
    app = Starlette(routes=[Route("/api/v1/pipelines/{pid}", _pipeline)])
    async with uvicorn_server(app) as url:
        yield url


@pytest.fixture
def settings_overrides(pipeline_service: str) -> dict[str, Any]:
    return {"pipeline_service_url": pipeline_service, "pipeline_service_timeout_seconds": 2}


async def _post(client: httpx.AsyncClient, pipeline_id: str) -> httpx.Response:
    return await client.post(
        "/builds", json={"pipeline_id": pipeline_id, "triggered_by": "t", "dispatch": False}
    )


async def test_reads_yaml_from_pipeline_service(client: httpx.AsyncClient) -> None:
    response = await _post(client, "good")
    assert response.status_code == 201
    snapshot = (await client.get(f"/builds/{response.json()['id']}/snapshot")).json()
    assert snapshot["workflow_yaml"] == PIPELINES["good"]["workflow_yaml"]


async def test_pipeline_service_errors(client: httpx.AsyncClient) -> None:
    missing = await _post(client, "nope")
    assert missing.status_code == 404
    assert "pipeline 'nope' not found" in missing.json()["detail"]
    down = await _post(client, "boom")
    assert down.status_code == 502
    assert "503" in down.json()["detail"]
    bad = await _post(client, "bad-yaml")
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["line"] == 3
    no_field = await _post(client, "no-field")
    assert no_field.status_code == 502
    assert (await client.get("/builds")).json()["total"] == 0


async def test_unreachable_pipeline_service_is_502(client: httpx.AsyncClient, app: Any) -> None:
    app.state.services.pipelines.base_url = (
        f"http://127.0.0.1:{free_port()}"  # nothing listens there
    )
    response = await _post(client, "good")
    assert response.status_code == 502
    assert "unreachable" in response.json()["detail"]
