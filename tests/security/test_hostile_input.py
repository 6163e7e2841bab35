"""Hostile requests (issue 10, items 4, 6, 9, 10, 13): bounded, validated, the same 4xx on SQLite
and Postgres, never a 500."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.security.conftest import WRITE_TOKEN


async def _raw_chunked(url: str, headers: dict[str, str], chunks: int, size: int) -> bytes:
    """POST a chunked body by hand, then read the answer WITHOUT ever finishing the body: a
    server that waits for (or buffers) the whole body never answers."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        (
            f"POST /api/v1/builds HTTP/1.1\r\nHost: {parts.hostname}\r\n"
            f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n{head}\r\n"
        ).encode()
    )
    chunk = b"[" * size
    try:
        for _ in range(chunks):
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
    except ConnectionError:
        pass  # the server answered and closed while we were still sending: what we want
    try:
        answer = await asyncio.wait_for(reader.read(4096), timeout=20)
    finally:
        writer.close()
    return answer


async def test_unauthenticated_chunked_body_is_refused_before_it_is_read(live_url: str) -> None:
    answer = await _raw_chunked(live_url, {}, chunks=4, size=64 * 1024)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    bad = await _raw_chunked(live_url, {"Authorization": "Bearer nope"}, chunks=4, size=64 * 1024)
    assert bad.startswith(b"HTTP/1.1 401"), bad[:200]


@pytest.mark.parametrize(
    "settings_overrides",
    [{"api_tokens": f"ci:{WRITE_TOKEN}:write", "max_workflow_bytes": 1024}],
)
async def test_chunked_body_past_the_limit_is_413_while_it_streams(
    live_url: str, settings_overrides: dict[str, Any]
) -> None:
    # Limit: 2 x 1 KiB + 64 KiB. 40 chunks of 16 KiB (640 KiB) are never all read.
    answer = await _raw_chunked(
        live_url, {"Authorization": f"Bearer {WRITE_TOKEN}"}, chunks=40, size=16 * 1024
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request body larger than" in answer
    assert settings_overrides["max_workflow_bytes"] == 1024
