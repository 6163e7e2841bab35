"""A spec-following Server-Sent Events parser over a real streamed HTTP response."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class SSEEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


async def sse_events(response: httpx.Response) -> AsyncIterator[SSEEvent]:
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
