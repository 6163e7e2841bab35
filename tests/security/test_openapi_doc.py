"""The OpenAPI document describes what the API really answers (issue 10, item 13)."""

from __future__ import annotations

from typing import Any

import httpx


async def _doc(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("http://test/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


async def test_every_error_status_is_documented_with_the_detail_schema(
    client: httpx.AsyncClient,
) -> None:
    paths = (await _doc(client))["paths"]
    create = paths["/api/v1/builds"]["post"]["responses"]
    assert {"200", "201", "401", "403", "404", "413", "422", "500", "502"} <= set(create)
    cancel = paths["/api/v1/builds/{build_id}/cancel"]["post"]["responses"]
    assert {"202", "401", "403", "404", "409", "422"} <= set(cancel)
    body = create["422"]["content"]["application/json"]["schema"]
    assert body["required"] == ["detail"]
    items = body["properties"]["detail"]["anyOf"][1]["items"]["anyOf"]
    # Workflow problems (line/column/message) are documented beside validation problems.
    assert any("line" in item["properties"] for item in items)


async def test_metrics_are_documented_as_text(client: httpx.AsyncClient) -> None:
    metrics = (await _doc(client))["paths"]["/metrics"]["get"]["responses"]["200"]
    assert list(metrics["content"]) == ["text/plain"]


async def test_405_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    response = await client.request("DELETE", "/builds")
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}
