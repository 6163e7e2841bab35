"""Hostile requests (issue 10, items 4, 6, 9, 10, 13): bounded, validated, the same 4xx on SQLite
and Postgres, never a 500."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest

from tests.security.conftest import WRITE_TOKEN
from tests.support import stub_http_server


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


YAML = "jobs:\n  a:\n    steps:\n      - run: echo hi\n"
BAD_BODIES = {
    "lone-surrogate-variable": {"variables": {"A": "\ud800"}},
    "nul-variable": {"variables": {"A": "a\x00b"}},
    "nul-branch": {"branch": "main\x00"},
    "surrogate-commit": {"commit_sha": "\udfff"},
    "long-branch": {"branch": "b" * 256},
    "long-triggered-by": {"triggered_by": "t" * 256},
    "nul-yaml": {"workflow_yaml": YAML + "# \x00\n"},
    "huge-variable": {"variables": {"A": "x" * (64 * 1024 + 1)}},
    "bad-variable-name": {"variables": {"A-B": "x"}},
    "dispatch-string": {"dispatch": "yes"},
    "dispatch-int": {"dispatch": 1},
    "pipeline-query": {"pipeline_id": "x?admin=1&delete=all"},
    "pipeline-dotdot": {"pipeline_id": ".."},
    "pipeline-fragment": {"pipeline_id": "x#frag"},
    "pipeline-control": {"pipeline_id": "x\ny"},
    "pipeline-slash": {"pipeline_id": "a/b"},
    "pipeline-leading-dot": {"pipeline_id": ".hidden"},
}


@pytest.mark.parametrize("patch", BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_bad_create_bodies_are_422_and_store_nothing(
    client: Any, patch: dict[str, Any]
) -> None:
    body = {"pipeline_id": "p1", "triggered_by": "t", "workflow_yaml": YAML, **patch}
    # ensure_ascii: lone surrogates travel as \ud800 escapes, as an attacker would send them.
    response = await client.post(
        "/builds",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list | str)
    listing = await client.get("/builds")
    assert listing.status_code == 200
    assert listing.json()["total"] == 0


@pytest.mark.parametrize(
    "path",
    [
        "/builds/9223372036854775808",
        "/builds/-9223372036854775809",
        "/builds/99999999999999999999999/snapshot",
        "/builds?page=9223372036854775807",
        "/builds?page=99999999999999999999",
        "/builds?branch=%00",
        "/builds?pipeline_id=x%3Fa%3D1",
    ],
)
async def test_out_of_range_integers_and_bad_filters_are_422(client: Any, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "path", ["/builds/9223372036854775808/cancel", "/builds/9223372036854775808/retry"]
)
async def test_out_of_range_ids_on_writes_are_422(client: Any, path: str) -> None:
    response = await client.post(path)
    assert response.status_code == 422, response.text


async def test_largest_64_bit_id_is_a_plain_404(client: Any) -> None:
    response = await client.get("/builds/9223372036854775807")
    assert response.status_code == 404


async def test_poisoned_variables_never_break_listing(client: Any) -> None:
    # The reproduction: one stored lone surrogate made every later page a 500.
    bad = await client.post(
        "/builds",
        content=b'{"pipeline_id":"p1","workflow_yaml":"jobs:\\n  a:\\n    steps:\\n      - run:'
        b' echo\\n","variables":{"A":"\\ud800"}}',
        headers={"Content-Type": "application/json"},
    )
    assert bad.status_code == 422
    good = await client.post(
        "/builds", json={"pipeline_id": "p1", "workflow_yaml": YAML, "dispatch": False}
    )
    assert good.status_code == 201
    listing = await client.get("/builds")
    assert listing.status_code == 200
    assert listing.json()["total"] == 1


class _Pipelines(BaseHTTPRequestHandler):
    """pipeline_service stand-in: records the paths it is asked for; pipeline `nul` answers a
    YAML holding a NUL character."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        if self.path.endswith("/nul"):
            body = json.dumps({"workflow_yaml": "jobs:\x00\n"}).encode()
            self.send_response(200)
        else:
            body = b'{"detail": "not found"}'
            self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def pipelines_url() -> Iterator[str]:
    with stub_http_server(_Pipelines) as url:
        yield url


@pytest.fixture
def settings_overrides(pipelines_url: str) -> dict[str, Any]:
    return {"api_tokens": f"ci:{WRITE_TOKEN}:write", "pipeline_service_url": pipelines_url}


async def test_pipeline_ids_reach_pipeline_service_as_one_plain_segment(client: Any) -> None:
    _Pipelines.seen.clear()
    for bad in ("x?admin=1&delete=all", "..", "x#frag", "a/../b", "x\r\ny"):
        response = await client.post("/builds", json={"pipeline_id": bad})
        assert response.status_code == 422, (bad, response.text)
    assert _Pipelines.seen == []  # nothing hostile was forwarded
    missing = await client.post("/builds", json={"pipeline_id": "team.app-1_x"})
    assert missing.status_code == 404
    assert _Pipelines.seen == ["/api/v1/pipelines/team.app-1_x"]
    # A YAML the database could not store is pipeline_service's fault: 502, not 500.
    nul = await client.post("/builds", json={"pipeline_id": "nul"})
    assert nul.status_code == 502
    assert "NUL" in nul.json()["detail"]


async def test_names_beyond_255_characters_same_answer_on_both_databases(client: Any) -> None:
    long = "j" * 300
    by_id = await client.post(
        "/builds",
        json={
            "pipeline_id": "p",
            "workflow_yaml": f"jobs:\n  {long}:\n    steps:\n      - run: echo\n",
        },
    )
    assert by_id.status_code == 422
    assert "at most 255" in by_id.text
    matrix = await client.post(
        "/builds",
        json={
            "pipeline_id": "p",
            "workflow_yaml": "jobs:\n  t:\n    strategy:\n      matrix:\n"
            f"        x: [{'v' * 300}]\n    steps:\n      - run: echo\n",
        },
    )
    assert matrix.status_code == 422
    # A long step name is fine: its display name is clipped to what the column holds.
    step = await client.post(
        "/builds",
        json={
            "pipeline_id": "p",
            "dispatch": False,
            "workflow_yaml": f"jobs:\n  t:\n    steps:\n      - name: {'n' * 400}\n"
            "        run: echo\n",
        },
    )
    assert step.status_code == 201
    name = step.json()["jobs"][0]["steps"][0]["name"]
    assert len(name) == 255 and name.endswith("…")
