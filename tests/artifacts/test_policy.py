"""Retention, cleanup of deleted builds, signed URLs and bad input, through the real app (ASGI)
on both databases with the directory backend (the S3 backend is covered by the toolkit tests)."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import text

from app.artifacts import common
from app.artifacts.service import ArtifactService
from app.artifacts.tokens import issue_runtime_token
from app.models.types import utcnow
from tests.artifacts.toolkit import TOKEN_SECRET
from tests.helpers import create, workflow

ARTIFACTS = "http://test/twirp/github.actions.results.api.v1.ArtifactService"
WORKFLOW = workflow(
    """
    jobs:
      build:
        steps:
          - run: echo hi
    """
)


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    return {
        "artifacts_dir": tmp_path / "store",
        "actions_token_secret": TOKEN_SECRET,
        "artifact_retention_days": 30,
    }


def service_of(app: Any) -> ArtifactService:
    service: ArtifactService = app.state.artifacts
    return service


def auth(build_id: int, job: str = "build") -> dict[str, str]:
    return {"authorization": f"Bearer {issue_runtime_token(TOKEN_SECRET, build_id, job, 600)}"}


async def upload(
    client: httpx.AsyncClient, build_id: int, name: str, content: bytes, **create_fields: Any
) -> dict[str, Any]:
    """CreateArtifact, two staged blocks and a block list (as the Azure SDK does), Finalize."""
    created = await client.post(
        f"{ARTIFACTS}/CreateArtifact",
        json={
            "workflow_run_backend_id": str(build_id),
            "name": name,
            "version": 7,
            **create_fields,
        },
        headers=auth(build_id),
    )
    assert created.status_code == 200, created.text
    url = created.json()["signed_upload_url"]
    half = len(content) // 2
    for block_id, part in (("QUFB", content[:half]), ("QkJC", content[half:])):
        staged = await client.put(f"{url}&comp=block&blockid={block_id}", content=part)
        assert staged.status_code == 201, staged.text
    blocklist = (
        b"<?xml version='1.0'?><BlockList><Latest>QUFB</Latest><Latest>QkJC</Latest></BlockList>"
    )
    committed = await client.put(f"{url}&comp=blocklist", content=blocklist)
    assert committed.status_code == 201, committed.text
    digest = hashlib.sha256(content).hexdigest()
    finalized = await client.post(
        f"{ARTIFACTS}/FinalizeArtifact",
        json={
            "workflow_run_backend_id": str(build_id),
            "name": name,
            "size": str(len(content)),
            "hash": f"sha256:{digest}",
        },
        headers=auth(build_id),
    )
    assert finalized.status_code == 200, finalized.text
    return {"id": int(finalized.json()["artifact_id"]), "upload_url": url}


async def test_retention_days_and_expiry_sweep(app: Any, client: httpx.AsyncClient) -> None:
    build_id = (await create(client, WORKFLOW, dispatch=False))["id"]
    far = (utcnow() + timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%SZ")
    near = (utcnow() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    long_lived = await upload(client, build_id, "clamped", b"x" * 1000, expires_at=far)
    short = await upload(client, build_id, "short", b"y" * 1000, expires_at=near)
    listing = (await client.get(f"/builds/{build_id}/artifacts")).json()["items"]
    expiry = {a["name"]: a["expires_at"] for a in listing}
    # retention-days may shorten the default (30 days here), never extend it.
    assert expiry["clamped"] < (utcnow() + timedelta(days=31)).isoformat()
    assert expiry["short"] < (utcnow() + timedelta(days=3)).isoformat()

    service = service_of(app)
    async with service.db.transaction() as session:
        await session.exec(  # type: ignore[call-overload]
            text("UPDATE artifacts SET expires_at = :t WHERE id = :i"),
            params={"t": utcnow() - timedelta(seconds=1), "i": short["id"]},
        )
    assert [
        a["name"] for a in (await client.get(f"/builds/{build_id}/artifacts")).json()["items"]
    ] == ["clamped"]
    gone = await client.get(f"/builds/{build_id}/artifacts/{short['id']}/zip")
    assert gone.status_code == 404
    counts = await service.sweep()
    assert counts["expired"] == 1
    assert await service.storage.size(f"artifacts/{build_id}/{short['id']}") is None
    assert await service.storage.size(f"artifacts/{build_id}/{long_lived['id']}") == 1000


async def test_deleted_build_leaves_no_blobs(app: Any, client: httpx.AsyncClient) -> None:
    keep = (await create(client, WORKFLOW, dispatch=False))["id"]
    doomed = (await create(client, WORKFLOW, dispatch=False))["id"]
    kept = await upload(client, keep, "a", b"keep me")
    await upload(client, doomed, "a", b"delete me")
    service = service_of(app)
    async with service.db.transaction() as session:
        await session.exec(text("DELETE FROM builds WHERE id = :i"), params={"i": doomed})  # type: ignore[call-overload]
    counts = await service.sweep()
    assert counts["orphaned"] == 1
    assert await service.storage.list_children("artifacts") == [str(keep)]
    response = await client.get(f"/builds/{keep}/artifacts/{kept['id']}/zip")
    assert response.status_code == 200 and response.content == b"keep me"


async def test_block_for_a_finished_upload_is_refused_and_not_stored(
    app: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A block for an upload that is already finalized is refused and leaves nothing behind
    (no staged block, no temp file), whatever the size of its body."""
    build_id = (await create(client, WORKFLOW, dispatch=False))["id"]
    done = await upload(client, build_id, "a", b"content")

    async def body() -> Any:
        for _ in range(8):
            yield b"z" * 256 * 1024

    late = await client.put(f"{done['upload_url']}&comp=block&blockid=Q0ND", content=body())
    assert late.status_code == 412 and "already finalized" in late.text
    storage = service_of(app).storage
    assert await storage.list_children(f"uploads/artifact-{done['id']}") == []
    assert list((tmp_path / "store" / ".tmp").glob("*.part")) == []


async def test_block_checks_its_upload_and_build(app: Any, client: httpx.AsyncClient) -> None:
    """A staged block is refused, before its body is stored, once its build has finished or
    its upload is gone (the one-statement check of check_uploadable), and accepted before."""
    build_id = (await create(client, WORKFLOW, dispatch=False))["id"]
    created = await client.post(
        f"{ARTIFACTS}/CreateArtifact", json={"name": "open"}, headers=auth(build_id)
    )
    url = created.json()["signed_upload_url"]
    accepted = await client.put(f"{url}&comp=block&blockid=QUFB", content=b"early")
    assert accepted.status_code == 201, accepted.text
    service = service_of(app)
    async with service.db.transaction() as session:
        await session.exec(  # type: ignore[call-overload]
            text("UPDATE builds SET status = 'success' WHERE id = :i"), params={"i": build_id}
        )
    late = await client.put(f"{url}&comp=block&blockid=QkJC", content=b"late")
    assert late.status_code == 401 and "has finished" in late.text
    async with service.db.transaction() as session:
        await session.exec(text("DELETE FROM artifacts"))  # type: ignore[call-overload]
    gone = await client.put(f"{url}&comp=block&blockid=Q0ND", content=b"gone")
    assert gone.status_code == 404 and "no such artifact upload" in gone.text
    # Only the early block was staged: the refused ones left nothing behind.
    artifact_id = urlsplit(url).path.split("/")[4]
    assert len(await service.storage.list_children(f"uploads/artifact-{artifact_id}")) == 1


async def test_block_counts_are_bounded_as_azure_bounds_them(
    app: Any, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload stages at most MAX_STAGED_BLOCKS blocks before its list (retries count), and
    a list names at most MAX_LISTED_BLOCKS: beyond, a clear 4xx, the body is not stored, and
    the upload can still be committed with what it has. Limits lowered here to 3 and 2."""
    monkeypatch.setattr(common, "MAX_STAGED_BLOCKS", 3)
    monkeypatch.setattr(common, "MAX_LISTED_BLOCKS", 2)
    build_id = (await create(client, WORKFLOW, dispatch=False))["id"]

    async def open_upload(name: str) -> str:
        created = await client.post(
            f"{ARTIFACTS}/CreateArtifact", json={"name": name}, headers=auth(build_id)
        )
        assert created.status_code == 200, created.text
        url: str = created.json()["signed_upload_url"]
        return url

    url = await open_upload("many")
    for block_id, part in (("QUFB", b"a"), ("QUFB", b"A"), ("QkJC", b"b")):  # one retried
        assert (
            await client.put(f"{url}&comp=block&blockid={block_id}", content=part)
        ).status_code == 201
    for _ in range(2):  # refused, and again: a refusal does not restart the count
        over = await client.put(f"{url}&comp=block&blockid=Q0ND", content=b"c")
        assert over.status_code == 413 and "at most 3 blocks" in over.text
    artifact_id = urlsplit(url).path.split("/")[4]
    storage = service_of(app).storage
    assert len(await storage.list_children(f"uploads/artifact-{artifact_id}")) == 2

    def listing(*ids: str) -> bytes:
        return (
            "<BlockList>" + "".join(f"<Latest>{i}</Latest>" for i in ids) + "</BlockList>"
        ).encode()

    too_long = await client.put(f"{url}&comp=blocklist", content=listing("QUFB", "QkJC", "QUFB"))
    assert too_long.status_code == 400 and "more than 2 blocks" in too_long.text
    committed = await client.put(f"{url}&comp=blocklist", content=listing("QUFB", "QkJC"))
    assert committed.status_code == 201, committed.text
    # The commit drops the staged blocks and their count.
    assert await storage.list_children(f"uploads/artifact-{artifact_id}") == []
    assert ("artifact", int(artifact_id)) not in service_of(app).staged._counts
    finalized = await client.post(
        f"{ARTIFACTS}/FinalizeArtifact",
        json={"name": "many", "size": "2", "hash": "sha256:" + hashlib.sha256(b"Ab").hexdigest()},
        headers=auth(build_id),
    )
    assert finalized.status_code == 200, finalized.text
    # Another upload counts its own blocks.
    other = await open_upload("other")
    for block_id in ("QUFB", "QkJC", "Q0ND"):
        assert (
            await client.put(f"{other}&comp=block&blockid={block_id}", content=b"x")
        ).status_code == 201


async def test_a_forgotten_block_count_starts_from_the_blocks_stored(
    app: Any, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Block counts are kept for the most recently active uploads only (here: one). An upload
    whose count was forgotten to make room for another starts again from the blocks it has
    stored: opening other uploads never lets one stage more than MAX_STAGED_BLOCKS (3 here)."""
    monkeypatch.setattr(common, "MAX_STAGED_BLOCKS", 3)
    staged = service_of(app).staged
    monkeypatch.setattr(staged, "_uploads", 1)
    build_id = (await create(client, WORKFLOW, dispatch=False))["id"]
    urls = []
    for name in ("first", "second"):
        created = await client.post(
            f"{ARTIFACTS}/CreateArtifact", json={"name": name}, headers=auth(build_id)
        )
        assert created.status_code == 200, created.text
        urls.append(created.json()["signed_upload_url"])
    first, second = urls
    for block_id in ("QUFB", "QkJC", "Q0ND"):
        put = await client.put(f"{first}&comp=block&blockid={block_id}", content=b"x")
        assert put.status_code == 201, put.text
    assert (await client.put(f"{second}&comp=block&blockid=QUFB", content=b"y")).status_code == 201
    first_id = int(urlsplit(first).path.split("/")[4])
    assert ("artifact", first_id) not in staged._counts  # forgotten
    over = await client.put(f"{first}&comp=block&blockid=RERE", content=b"z")
    assert over.status_code == 413 and "at most 3 blocks" in over.text
    listed = await service_of(app).storage.list_children(f"uploads/artifact-{first_id}")
    assert len(listed) == 3


def tamper(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


async def test_signed_urls_are_checked(client: httpx.AsyncClient) -> None:
    build_id = (await create(client, WORKFLOW, dispatch=False))["id"]
    done = await upload(client, build_id, "a", b"content")
    signed = await client.post(
        f"{ARTIFACTS}/GetSignedArtifactURL",
        json={"workflow_run_backend_id": str(build_id), "name": "a"},
        headers=auth(build_id, "other-job"),
    )
    url = signed.json()["signed_url"]
    assert (await client.get(url)).content == b"content"
    bad_sig = await client.get(tamper(url, sig="0" * 64))
    assert bad_sig.status_code == 401 and "bad signature" in bad_sig.text
    expired = await client.get(tamper(url, se=str(int(time.time()) - 10)))
    assert expired.status_code == 401
    # An upload URL does not download, nor a download URL upload.
    assert (await client.get(done["upload_url"])).status_code == 401
    assert (await client.put(url, content=b"overwrite")).status_code == 401
    assert (await client.get(url)).content == b"content"


async def test_bad_input_is_refused_and_nothing_listed(client: httpx.AsyncClient) -> None:
    build_id = (await create(client, WORKFLOW, dispatch=False))["id"]
    headers = auth(build_id)
    bad_name = await client.post(
        f"{ARTIFACTS}/CreateArtifact", json={"name": "a/b:c"}, headers=headers
    )
    assert bad_name.status_code == 400
    assert (
        bad_name.json()["code"] == "invalid_argument"
        and "invalid artifact name" in bad_name.json()["msg"]
    )
    no_token = await client.post(f"{ARTIFACTS}/ListArtifacts", json={})
    assert no_token.status_code == 401 and no_token.json()["code"] == "unauthenticated"
    other_run = await client.post(
        f"{ARTIFACTS}/ListArtifacts", json={"workflow_run_backend_id": "999"}, headers=headers
    )
    assert other_run.status_code == 403

    created = await client.post(f"{ARTIFACTS}/CreateArtifact", json={"name": "x"}, headers=headers)
    url = created.json()["signed_upload_url"]
    unknown_block = await client.put(
        f"{url}&comp=blocklist", content=b"<BlockList><Latest>bm9wZQ==</Latest></BlockList>"
    )
    assert unknown_block.status_code == 400 and "never uploaded" in unknown_block.text
    bad_xml = await client.put(f"{url}&comp=blocklist", content=b"<BlockList><Latest>")
    assert bad_xml.status_code == 400
    assert (await client.put(url, content=b"real bytes")).status_code == 201
    wrong_digest = await client.post(
        f"{ARTIFACTS}/FinalizeArtifact",
        json={"name": "x", "size": "10", "hash": "sha256:" + "0" * 64},
        headers=headers,
    )
    assert wrong_digest.status_code == 400 and "digest mismatch" in wrong_digest.json()["msg"]
    wrong_size = await client.post(
        f"{ARTIFACTS}/FinalizeArtifact", json={"name": "x", "size": "11"}, headers=headers
    )
    assert wrong_size.status_code == 400
    listed = await client.post(f"{ARTIFACTS}/ListArtifacts", json={}, headers=headers)
    assert listed.json() == {"artifacts": []}
    assert (await client.get(f"/builds/{build_id}/artifacts")).json()["items"] == []


async def test_public_api_not_found(client: httpx.AsyncClient) -> None:
    assert (await client.get("/builds/424242/artifacts")).status_code == 404
    # Ids beyond 64 bits are refused before they reach the database (same on both backends).
    assert (await client.get(f"/builds/{2**63}/artifacts")).status_code == 422
    huge = await client.get(f"http://test/_actions/blob/artifact/{2**64}/x?se=1&sig=x")
    assert huge.status_code == 422
    build_id = (await create(client, WORKFLOW, dispatch=False))["id"]
    assert (await client.get(f"/builds/{build_id}/artifacts/1/zip")).status_code == 404
    assert (await client.delete(f"/builds/{build_id}/artifacts/1")).status_code == 404
    assert (await client.delete("/build-caches/1", params={"pipeline_id": "p1"})).status_code == 404
    listing = await client.get("/build-caches", params={"pipeline_id": "p1"})
    assert listing.json() == {"items": [], "total_bytes": 0}


CACHES = "http://test/twirp/github.actions.results.api.v1.CacheService"


async def _cache_call(
    client: httpx.AsyncClient, build_id: int, method: str, **body: Any
) -> httpx.Response:
    return await client.post(f"{CACHES}/{method}", json=body, headers=auth(build_id))


async def test_cache_archive_is_stored_unhashed_and_finalized_by_status(
    app: Any, client: httpx.AsyncClient
) -> None:
    """A cache archive gets no sha256 (neither cache protocol has a digest to compare): the
    commit of its blocks records `uploaded`, which FinalizeCacheEntryUpload requires. An
    uploaded archive never finalized is abandoned like a reservation: swept, and its key free
    again."""
    build_id = (await create(client, WORKFLOW, dispatch=False))["id"]
    entry = {"key": "deps-1", "version": "v" * 64}
    created = await _cache_call(client, build_id, "CreateCacheEntry", **entry)
    assert created.status_code == 200, created.text
    url = created.json()["signed_upload_url"]
    early = await _cache_call(client, build_id, "FinalizeCacheEntryUpload", **entry, size_bytes="6")
    assert early.status_code == 412 and "not uploaded" in early.text
    for block_id, part in (("QUFB", b"abc"), ("QkJC", b"def")):
        staged = await client.put(f"{url}&comp=block&blockid={block_id}", content=part)
        assert staged.status_code == 201, staged.text
    blocklist = b"<BlockList><Latest>QUFB</Latest><Latest>QkJC</Latest></BlockList>"
    assert (await client.put(f"{url}&comp=blocklist", content=blocklist)).status_code == 201
    service = service_of(app)
    async with service.db.read() as session:
        rows = (
            await session.exec(  # type: ignore[call-overload]
                text("SELECT id, status, size FROM action_caches WHERE key = 'deps-1'")
            )
        ).all()
    assert [(row[1], row[2]) for row in rows] == [("uploaded", 6)]
    cache_id = rows[0][0]
    assert not service.storage._chains  # no in-order hashing was ever set up for it
    wrong = await _cache_call(client, build_id, "FinalizeCacheEntryUpload", **entry, size_bytes="7")
    assert wrong.status_code == 400 and "size mismatch" in wrong.text

    # Left uploaded past STALE_UPLOAD: abandoned.
    async with service.db.transaction() as session:
        await session.exec(  # type: ignore[call-overload]
            text("UPDATE action_caches SET created_at = :t WHERE id = :i"),
            params={"t": utcnow() - timedelta(hours=7), "i": cache_id},
        )
    again = await _cache_call(client, build_id, "CreateCacheEntry", **entry)
    assert again.status_code == 200, again.text  # the abandoned entry made way
    async with service.db.transaction() as session:
        await session.exec(  # type: ignore[call-overload]
            text("UPDATE action_caches SET status = 'uploaded', created_at = :t"),
            params={"t": utcnow() - timedelta(hours=7)},
        )
    counts = await service.sweep()
    assert counts["abandoned"] == 1
    async with service.db.read() as session:
        left = (await session.exec(text("SELECT count(*) FROM action_caches"))).one()  # type: ignore[call-overload]
    assert left[0] == 0
    assert await service.storage.size(f"caches/{cache_id}") is None


async def test_v1_cache_chunks_count_against_the_staged_block_limit(
    app: Any, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The v1 cache protocol's PATCH chunks are staged blocks too: past MAX_STAGED_BLOCKS
    (lowered to 2) a chunk gets 413 and is not stored; the commit of the chunks that were
    stored still works and resets the count."""
    monkeypatch.setattr(common, "MAX_STAGED_BLOCKS", 2)
    build_id = (await create(client, WORKFLOW, dispatch=False))["id"]
    v1 = "http://test/_actions/cache/_apis/artifactcache"
    reserved = await client.post(
        f"{v1}/caches", json={"key": "v1-key", "version": "v" * 64}, headers=auth(build_id)
    )
    assert reserved.status_code == 201, reserved.text
    cache_id = reserved.json()["cacheId"]

    async def chunk(start: int, data: bytes) -> httpx.Response:
        headers = {**auth(build_id), "content-range": f"bytes {start}-{start + len(data) - 1}/*"}
        return await client.patch(f"{v1}/caches/{cache_id}", content=data, headers=headers)

    assert (await chunk(0, b"abc")).status_code == 204
    assert (await chunk(3, b"def")).status_code == 204
    for _ in range(2):  # refused, and again: a refusal does not restart the count
        over = await chunk(6, b"ghi")
        assert over.status_code == 413 and "at most 2 blocks" in over.text
    storage = service_of(app).storage
    assert await storage.list_children(f"uploads/cache-{cache_id}") == [
        f"{0:020d}",
        f"{3:020d}",
    ]
    committed = await client.post(
        f"{v1}/caches/{cache_id}", json={"size": 6}, headers=auth(build_id)
    )
    assert committed.status_code == 204, committed.text
    assert ("cache", cache_id) not in service_of(app).staged._counts
