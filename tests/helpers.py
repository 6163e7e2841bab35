"""Test helpers: creating builds, waiting for them by polling, and parsing real SSE streams."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx


def pids_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains `marker`, seen from the host:
    works for steps in their own PID namespace, whose `$!` means nothing out here."""
    found: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry.name}/stat") as f:
                state = f.read().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z" and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


async def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy (or fail at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)


async def wait_for_build(
    client: httpx.AsyncClient, build_id: int, timeout: float = 60.0
) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        detail: dict[str, Any] = (await client.get(f"/builds/{build_id}")).json()
        return detail if detail["status"] in FINISHED else None

    result: dict[str, Any] = await wait_until(finished, timeout)
    return result


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

    await wait_until(seen, timeout)


def ts(value: str) -> datetime:
    """An API timestamp (ISO 8601 with offset) as an aware datetime."""
    return datetime.fromisoformat(value)


@dataclass
class SSEEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


async def sse_events(response: httpx.Response) -> AsyncIterator[SSEEvent]:
    """A spec-following SSE parser over a real streamed HTTP response."""
    current = SSEEvent()
    data_lines: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data_lines or current.event != "message" or current.id is not None:
                current.data = "\n".join(data_lines)
                yield current
            elif current.comments:
                yield current
            current, data_lines = SSEEvent(), []
            continue
        if line.startswith(":"):
            current.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            current.event = value
        elif name == "data":
            data_lines.append(value)
        elif name == "id":
            current.id = value
