"""Artifacts of a build and caches of a pipeline (docs/actions.md).

The toolkit-facing endpoints (Twirp, signed blob URLs, the legacy cache API) live in
`app.artifacts.routes.runtime_router`; these are the ones people and the UI use. Caches are under
`/build-caches` so the gateway's `/api/v1/build*` route already reaches them (`/pipelines*` goes
to pipeline_service).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from app.api.deps import ReaderDep, ReadSessionDep, WriterDep
from app.artifacts.common import ArtifactError
from app.artifacts.models import Artifact, CacheEntry
from app.artifacts.routes import BLOB_PATH_PREFIXES, runtime_router
from app.artifacts.service import ArtifactService
from app.artifacts.storage import ObjectNotFound, StorageError
from app.errors import NotFound, ServiceError
from app.models import Build
from app.models.types import PIPELINE_ID_PATTERN

router = APIRouter(tags=["artifacts"])
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]

__all__ = ["BLOB_PATH_PREFIXES", "router", "runtime_router"]


class Unavailable(ServiceError):
    status_code = 503


def _service(request: Request) -> ArtifactService:
    service: ArtifactService = request.app.state.artifacts
    return service


ServiceDep = Annotated[ArtifactService, Depends(_service)]


class ArtifactPublic(BaseModel):
    id: int
    name: str
    job_name: str
    size: int
    digest: str
    content_type: str
    created_at: datetime
    expires_at: datetime
    download_url: str


class ArtifactList(BaseModel):
    items: list[ArtifactPublic]
    total_bytes: int


class CachePublic(BaseModel):
    id: int
    pipeline_id: str
    branch: str
    key: str
    version: str
    size: int
    build_id: int | None
    created_at: datetime
    last_used_at: datetime


class CacheList(BaseModel):
    items: list[CachePublic]
    total_bytes: int


class CacheDeleted(BaseModel):
    deleted: int


def _artifact(a: Artifact) -> ArtifactPublic:
    assert a.id is not None
    return ArtifactPublic(
        id=a.id,
        name=a.name,
        job_name=a.job_name,
        size=a.size,
        digest=f"sha256:{a.sha256}",
        content_type=a.mime_type,
        created_at=a.created_at,
        expires_at=a.expires_at,
        download_url=f"/api/v1/builds/{a.build_id}/artifacts/{a.id}/zip",
    )


def _cache(c: CacheEntry) -> CachePublic:
    assert c.id is not None
    return CachePublic(
        id=c.id,
        pipeline_id=c.pipeline_id,
        branch=c.scope,
        key=c.key,
        version=c.version,
        size=c.size,
        build_id=c.build_id,
        created_at=c.created_at,
        last_used_at=c.last_used_at,
    )


async def _known_build(session: Any, build_id: int) -> None:
    if await session.get(Build, build_id) is None:
        raise NotFound(f"build {build_id} not found")


@router.get("/builds/{build_id}/artifacts", response_model=ArtifactList)
async def list_artifacts(
    build_id: Id, _caller: ReaderDep, session: ReadSessionDep, service: ServiceDep
) -> ArtifactList:
    """The build's finished, unexpired artifacts (name, job, size, sha256 digest, expiry) with
    the URL that downloads each as a zip. 404 for an unknown build."""
    await _known_build(session, build_id)
    items = [_artifact(a) for a in await service.list_artifacts(build_id)]
    return ArtifactList(items=items, total_bytes=sum(i.size for i in items))


async def _ready_artifact(service: ArtifactService, build_id: int, artifact_id: int) -> Artifact:
    try:
        artifact = await service.get_artifact(artifact_id)
    except ArtifactError:
        raise NotFound(f"artifact {artifact_id} not found in build {build_id}") from None
    if artifact.build_id != build_id:
        raise NotFound(f"artifact {artifact_id} not found in build {build_id}")
    return artifact


@router.get(
    "/builds/{build_id}/artifacts/{artifact_id}/zip",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
async def download_artifact(
    build_id: Id, artifact_id: Id, _caller: ReaderDep, service: ServiceDep
) -> StreamingResponse:
    """Download one artifact, streamed: the zip upload-artifact made (or the single file it
    uploaded unarchived), with its sha256 in the `Digest` header."""
    artifact = await _ready_artifact(service, build_id, artifact_id)
    stream = service.read_blob(artifact)
    try:
        first = await anext(stream, b"")
    except ObjectNotFound:
        raise Unavailable("the artifact's content is missing from storage") from None
    except (StorageError, OSError):
        raise Unavailable("artifact storage is unavailable; retry later") from None

    async def body() -> AsyncIterator[bytes]:
        # Closed even when the client goes away mid-download, so no file handle lingers.
        async with contextlib.aclosing(stream):
            if first:
                yield first
            async for chunk in stream:
                yield chunk

    zipped = artifact.mime_type.split(";")[0].strip() == "application/zip"
    filename = f"{artifact.name}.zip" if zipped else artifact.name
    return StreamingResponse(
        body(),
        media_type=artifact.mime_type,
        headers={
            "Content-Length": str(artifact.size),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename, safe='')}",
            "Digest": f"sha-256={artifact.sha256}",
        },
    )


@router.delete("/builds/{build_id}/artifacts/{artifact_id}", status_code=204)
async def delete_artifact(
    build_id: Id, artifact_id: Id, _caller: WriterDep, service: ServiceDep
) -> Response:
    """Delete one artifact and its content. 204; 404 if it does not exist."""
    artifact = await _ready_artifact(service, build_id, artifact_id)
    await service.delete_artifact(build_id, artifact.name)
    return Response(status_code=204)


@router.get("/build-caches", response_model=CacheList)
async def list_caches(
    _caller: ReaderDep,
    service: ServiceDep,
    pipeline_id: Annotated[str, Query(min_length=1, max_length=255, pattern=PIPELINE_ID_PATTERN)],
    branch: Annotated[str | None, Query(max_length=255)] = None,
) -> CacheList:
    """A pipeline's cache entries (optionally one branch's), most recently used first, with
    their total size."""
    items = [_cache(c) for c in await service.list_caches(pipeline_id, branch)]
    return CacheList(items=items, total_bytes=sum(i.size for i in items))


@router.delete("/build-caches", response_model=CacheDeleted)
async def delete_caches(
    _caller: WriterDep,
    service: ServiceDep,
    pipeline_id: Annotated[str, Query(min_length=1, max_length=255, pattern=PIPELINE_ID_PATTERN)],
    key: Annotated[str | None, Query(max_length=512)] = None,
    branch: Annotated[str | None, Query(max_length=255)] = None,
) -> CacheDeleted:
    """Delete a pipeline's caches: all of them, or those with this exact `key` and/or on this
    `branch` (as `gh cache delete`)."""
    doomed = await service.delete_caches(pipeline_id, key=key, branch=branch)
    return CacheDeleted(deleted=len(doomed))


@router.delete("/build-caches/{cache_id}", status_code=204)
async def delete_cache(
    cache_id: Id,
    _caller: WriterDep,
    service: ServiceDep,
    pipeline_id: Annotated[str, Query(min_length=1, max_length=255, pattern=PIPELINE_ID_PATTERN)],
) -> Response:
    """Delete one cache entry of the pipeline. 204; 404 if it does not exist."""
    if not await service.delete_caches(pipeline_id, cache_id=cache_id):
        raise NotFound(f"cache {cache_id} not found in pipeline {pipeline_id}")
    return Response(status_code=204)
