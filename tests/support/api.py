"""Talking to the API in tests: create builds, wait for them, read their jobs and logs."""

from __future__ import annotations

import textwrap
from datetime import datetime
from typing import Any

import httpx

from tests.support.waiting import wait_until

FINISHED = {"success", "failed", "cancelled", "timed_out", "error"}


def workflow(text: str) -> str:
    return textwrap.dedent(text).lstrip()


async def create(
    client: httpx.AsyncClient, yaml_text: str, expect: int = 201, **body: Any
) -> dict[str, Any]:
    payload = {"pipeline_id": "p1", "triggered_by": "tester", "workflow_yaml": yaml_text, **body}
    response = await client.post("/builds", json=payload)
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result


async def wait_for_build(
    client: httpx.AsyncClient, build_id: int, timeout: float = 60.0
) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        detail: dict[str, Any] = (await client.get(f"/builds/{build_id}")).json()
        return detail if detail["status"] in FINISHED else None

    result: dict[str, Any] | None = await wait_until(
        finished, f"build {build_id} to finish", timeout=timeout
    )
    assert result is not None
    return result


async def run_workflow(client: httpx.AsyncClient, text: str, **body: Any) -> dict[str, Any]:
    """Create a build of `text` (dedented) through the API and wait until it finished."""
    return await wait_for_build(client, (await create(client, workflow(text), **body))["id"])


def job(detail: dict[str, Any], name: str) -> dict[str, Any]:
    for j in detail["jobs"]:
        if j["name"] == name:
            return dict(j)
    raise KeyError(name)


def step_statuses(detail: dict[str, Any], name: str) -> list[tuple[str, int | None]]:
    return [(s["status"], s["exit_code"]) for s in job(detail, name)["steps"]]


async def all_logs(client: httpx.AsyncClient, build_id: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = (
            await client.get(f"/builds/{build_id}/logs", params={"offset": offset, "limit": 1000})
        ).json()
        items.extend(page["items"])
        if not page["items"]:
            return items
        offset = page["next_offset"]


async def log_text(client: httpx.AsyncClient, build_id: int) -> str:
    return "".join(c["content"] for c in await all_logs(client, build_id))


async def wait_for_output(
    client: httpx.AsyncClient, build_id: int, text: str = "", timeout: float = 60.0
) -> None:
    """Wait until the build's stored log contains `text` (any output at all when empty)."""

    async def seen() -> bool:
        logged = await log_text(client, build_id)
        return text in logged if text else bool(logged)

    await wait_until(seen, f"{text!r} in the log of build {build_id}", timeout=timeout)


def ts(value: str) -> datetime:
    """An API timestamp (ISO 8601 with offset) as an aware datetime."""
    return datetime.fromisoformat(value)
