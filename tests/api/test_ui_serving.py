"""The built UI is served at / with history fallback and never shadows the API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

import app.main as main_module
from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def ui_client(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<html>ci ui</html>")
    (dist / "assets" / "app.js").write_text("console.log(1)")
    (dist / "favicon.svg").write_text("<svg/>")
    monkeypatch.setattr(main_module, "WEB_DIST", dist)
    application = main_module.create_app(settings)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_ui_history_fallback_and_api_not_shadowed(ui_client: httpx.AsyncClient) -> None:
    for path in ("/", "/ci/builds/12", "/ci/pipelines/p/builds"):
        response = await ui_client.get(path)
        assert response.status_code == 200
        assert response.text == "<html>ci ui</html>"
    assert (await ui_client.get("/assets/app.js")).text == "console.log(1)"
    assert (await ui_client.get("/favicon.svg")).text == "<svg/>"
    assert (await ui_client.get("/api/v1/builds")).json()["items"] == []
    assert (await ui_client.get("/api/v1/nope")).status_code == 404
    assert (await ui_client.get("/healthz")).json() == {"status": "ok"}
    assert (await ui_client.get("/readyz")).status_code == 200
    assert "ci_running_builds" in (await ui_client.get("/metrics")).text
    assert (await ui_client.get("/docs")).status_code == 200
    assert "paths" in (await ui_client.get("/openapi.json")).json()
    assert (await ui_client.get("/../../etc/passwd")).text == "<html>ci ui</html>"


async def test_saved_openapi_for_the_web_client_is_current(client: httpx.AsyncClient) -> None:
    """web/openapi.json generates the UI's TypeScript types; it must match the live schema
    (regenerate with: curl localhost:10056/openapi.json > web/openapi.json; npm run gen:api)."""
    live: Any = (await client.get("http://test/openapi.json")).json()
    saved = json.loads((ROOT / "web" / "openapi.json").read_text())
    assert saved == live


async def test_head_cache_headers_and_gzip(ui_client: httpx.AsyncClient) -> None:
    for path in ("/", "/ci", "/ci/builds/3?job=a", "/favicon.svg"):
        head = await ui_client.head(path)
        assert head.status_code == 200, path
        assert head.content == b""
        assert head.headers["cache-control"] == "no-cache"
    asset = await ui_client.get("/assets/app.js")
    assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert (await ui_client.head("/assets/app.js")).status_code == 200
    assert (await ui_client.get("/assets/missing.js")).status_code == 404

    # JSON is gzipped for clients that accept it (above the minimum size), not for others.
    quick = "jobs:\n  a:\n    steps:\n      - run: 'true'\n"
    for n in range(12):
        body = {"pipeline_id": "p", "workflow_yaml": quick, "dispatch": False, "branch": f"b{n}"}
        assert (await ui_client.post("/api/v1/builds", json=body)).status_code == 201
    gz = await ui_client.get("/api/v1/builds", headers={"Accept-Encoding": "gzip"})
    assert gz.headers["content-encoding"] == "gzip"
    assert gz.json()["total"] == 12  # httpx decodes it
    plain = await ui_client.get("/api/v1/builds", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    # Logs: the raw text and the SSE stream are never compressed.
    build_id = gz.json()["items"][0]["id"]
    await ui_client.post(f"/api/v1/builds/{build_id}/logs", json={"content": "x" * 5000})
    raw = await ui_client.get(
        f"/api/v1/builds/{build_id}/logs/raw", headers={"Accept-Encoding": "gzip"}
    )
    assert "content-encoding" not in raw.headers
    assert raw.text == "x" * 5000
    await ui_client.post(f"/api/v1/builds/{build_id}/cancel")
    stream = await ui_client.get(
        f"/api/v1/builds/{build_id}/logs/stream", headers={"Accept-Encoding": "gzip"}
    )
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert "content-encoding" not in stream.headers
    assert "event: end" in stream.text
