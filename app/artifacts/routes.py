"""The endpoints the official toolkit calls from inside a job (not under /api/v1):

- `POST /twirp/github.actions.results.api.v1.ArtifactService/<Method>` (`@actions/artifact` v2+)
- `POST /twirp/github.actions.results.api.v1.CacheService/<Method>` (`@actions/cache`, service v2)
- `/_actions/cache/_apis/artifactcache/...` (`@actions/cache`, legacy service v1: what the
  toolkit uses whenever `GITHUB_SERVER_URL` is not github.com)
- `PUT|GET /_actions/blob/<kind>/<id>/<file>?se=&sp=&sig=`: the signed URLs, spoken to as Azure
  Blob Storage (Put Block, Put Block List, Put Blob) by the toolkit's Azure SDK, and as a plain
  GET by its downloaders.

Twirp answers errors as `{"code", "msg"}` with the code's HTTP status, so the toolkit retries
what is retryable (5xx) and reports the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from app.artifacts.common import (
    ArtifactError,
    Caller,
    md5_header_hex,
    parse_block_list,
    resolve_secret,
)
from app.artifacts.models import Artifact, CacheEntry
from app.artifacts.service import ArtifactService
from app.artifacts.storage import (
    ChecksumMismatch,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
    create_storage,
)
from app.artifacts.tokens import job_backend_id
from app.serving import FilesResponse, RequestBody, can_sendfile
from app.wiring import Services

log = logging.getLogger(__name__)
ARTIFACT_SERVICE = "/twirp/github.actions.results.api.v1.ArtifactService"
CACHE_SERVICE = "/twirp/github.actions.results.api.v1.CacheService"
CACHE_V1 = "/_actions/cache/_apis/artifactcache"
BLOB = "/_actions/blob"
# Paths whose request bodies are blobs (exempt from the app's JSON body limit).
BLOB_PATH_PREFIXES = (BLOB + "/", CACHE_V1 + "/caches/")
MAX_TWIRP_BODY = 1024 * 1024
# Ids in URLs are 64-bit: anything larger is a 422 before it reaches the database.
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]

STATUS = {
    "invalid_argument": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "already_exists": 409,
    "failed_precondition": 412,
    "resource_exhausted": 413,
    "internal": 500,
    "unavailable": 503,
}


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Storage and the service; the sweeper for retention, orphans and eviction."""
    services: Services = app.state.services  # the main lifespan's parts, set before ours runs
    settings = services.settings
    storage = create_storage(settings)
    await storage.start()
    service = ArtifactService(services.db, storage, settings, resolve_secret(settings))
    app.state.artifacts = service
    sweeper = asyncio.create_task(
        service.run_sweeper(settings.artifacts_sweep_interval_seconds), name="artifact-sweeper"
    )
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await storage.close()


runtime_router = APIRouter(include_in_schema=False, lifespan=lifespan)


def _service(request: Request) -> ArtifactService:
    service: ArtifactService = request.app.state.artifacts
    return service


def _twirp_error(code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "msg": message}, status_code=STATUS.get(code, 500))


def _failure(exc: Exception) -> tuple[str, str]:
    """Map a service or storage failure to a (Twirp code, message) pair."""
    if isinstance(exc, ArtifactError):
        return exc.code, exc.message
    if isinstance(exc, ChecksumMismatch):
        return "invalid_argument", str(exc)
    if isinstance(exc, ObjectTooLarge):
        return "resource_exhausted", str(exc)
    if isinstance(exc, ObjectNotFound):
        return "not_found", "the blob is missing from storage"
    if isinstance(exc, ValueError):
        return "invalid_argument", str(exc)
    if isinstance(exc, ClientDisconnect):  # nobody reads the answer: not worth a traceback
        log.info("a blob upload ended early: %s", exc or "the client went away")
        return "invalid_argument", "the request body ended early"
    # Storage or network trouble: ours, not the caller's; 503 makes the toolkit retry.
    log.warning("artifact storage failure: %s", exc)
    return "unavailable", "artifact storage is unavailable; retry later"


HANDLED = (ArtifactError, StorageError, ValueError, OSError, ClientDisconnect)


def _get(body: dict[str, Any], name: str) -> Any:
    """A field by its proto name or its JSON (camelCase) name, as protojson accepts both."""
    if name in body:
        return body[name]
    head, *rest = name.split("_")
    return body.get(head + "".join(p.title() for p in rest))


def _int64(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise ArtifactError("invalid_argument", f"not an int64: {value!r}")


def _str(body: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = _get(body, name)
    if isinstance(value, dict):  # a wrapper written as an object
        value = value.get("value")
    if value is None or value == "":
        if required:
            raise ArtifactError("invalid_argument", f"{name} is required")
        return None
    if not isinstance(value, str):
        raise ArtifactError("invalid_argument", f"{name} must be a string")
    return value


def _timestamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _base_url(request: Request, service: ArtifactService) -> str:
    if service.settings.actions_public_url:
        return service.settings.actions_public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


async def _twirp(
    request: Request, handler: Callable[[ArtifactService, Caller, dict[str, Any]], Awaitable[Any]]
) -> Response:
    service = _service(request)
    try:
        caller = await service.authenticate(request.headers.get("authorization"))
        raw = await request.body()
        if len(raw) > MAX_TWIRP_BODY:
            raise ArtifactError("invalid_argument", "request body too large")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise ArtifactError("invalid_argument", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise ArtifactError("invalid_argument", "the body must be a JSON object")
        run_id = _get(body, "workflow_run_backend_id")
        if run_id not in (None, "", str(caller.claims.build_id)):
            raise ArtifactError("permission_denied", "the token is not for that workflow run")
        result = await handler(service, caller, body)
    except HANDLED as exc:
        return _twirp_error(*_failure(exc))
    return JSONResponse(result)


def _artifact_message(artifact: Artifact) -> dict[str, Any]:
    return {
        "workflow_run_backend_id": str(artifact.build_id),
        "workflow_job_run_backend_id": job_backend_id(artifact.job_name),
        "database_id": str(artifact.id),
        "name": artifact.name,
        "size": str(artifact.size),
        "created_at": _timestamp(artifact.created_at),
        "digest": f"sha256:{artifact.sha256}",
    }


def _artifact_filename(artifact: Artifact) -> str:
    zipped = artifact.mime_type.split(";")[0].strip() == "application/zip"
    return (
        f"{artifact.name}.zip" if zipped and not artifact.name.endswith(".zip") else artifact.name
    )


async def _create_artifact(
    service: ArtifactService, caller: Caller, body: dict[str, Any], request: Request
) -> dict[str, Any]:
    name = _str(body, "name") or ""
    raw_expiry = _str(body, "expires_at", required=False)
    expires = None
    if raw_expiry:
        try:
            expires = datetime.fromisoformat(raw_expiry.replace("Z", "+00:00"))
        except ValueError:
            raise ArtifactError("invalid_argument", "expires_at is not a timestamp") from None
        if expires.tzinfo is None:
            raise ArtifactError("invalid_argument", "expires_at needs a time zone")
    artifact = await service.create_artifact(caller, name, expires, _str(body, "mime_type", False))
    assert artifact.id is not None
    url = service.signed_url(
        _base_url(request, service),
        "artifact",
        artifact.id,
        "upload",
        quote(_artifact_filename(artifact), safe=""),
    )
    return {"ok": True, "signed_upload_url": url}


@runtime_router.post(ARTIFACT_SERVICE + "/{method}")
async def artifact_service(method: str, request: Request) -> Response:
    async def create(s: ArtifactService, c: Caller, b: dict[str, Any]) -> dict[str, Any]:
        return await _create_artifact(s, c, b, request)

    async def finalize(s: ArtifactService, c: Caller, b: dict[str, Any]) -> dict[str, Any]:
        artifact = await s.finalize_artifact(
            c, _str(b, "name") or "", _int64(_get(b, "size")), _str(b, "hash", required=False)
        )
        return {"ok": True, "artifact_id": str(artifact.id)}

    async def list_(s: ArtifactService, c: Caller, b: dict[str, Any]) -> dict[str, Any]:
        id_filter = _get(b, "id_filter")
        if isinstance(id_filter, dict):
            id_filter = id_filter.get("value")
        artifacts = await s.list_artifacts(
            c.claims.build_id, _str(b, "name_filter", required=False), _int64(id_filter)
        )
        return {"artifacts": [_artifact_message(a) for a in artifacts]}

    async def signed(s: ArtifactService, c: Caller, b: dict[str, Any]) -> dict[str, Any]:
        name = _str(b, "name") or ""
        found = await s.list_artifacts(c.claims.build_id, name=name)
        if not found:
            raise ArtifactError("not_found", f"no artifact named {name!r} in this build")
        artifact = found[0]
        assert artifact.id is not None
        url = s.signed_url(
            _base_url(request, s),
            "artifact",
            artifact.id,
            "download",
            quote(_artifact_filename(artifact), safe=""),
        )
        return {"signed_url": url}

    async def delete(s: ArtifactService, c: Caller, b: dict[str, Any]) -> dict[str, Any]:
        artifact = await s.delete_artifact(c.claims.build_id, _str(b, "name") or "")
        return {"ok": True, "artifact_id": str(artifact.id)}

    handlers = {
        "CreateArtifact": create,
        "FinalizeArtifact": finalize,
        "ListArtifacts": list_,
        "GetSignedArtifactURL": signed,
        "DeleteArtifact": delete,
    }
    handler = handlers.get(method)
    if handler is None:
        return _twirp_error("bad_route", f"no method {method}")
    return await _twirp(request, handler)


@runtime_router.post(CACHE_SERVICE + "/{method}")
async def cache_service(method: str, request: Request) -> Response:
    async def create(s: ArtifactService, c: Caller, b: dict[str, Any]) -> dict[str, Any]:
        entry = await s.reserve_cache(c, _str(b, "key") or "", _str(b, "version") or "")
        assert entry.id is not None
        url = s.signed_url(_base_url(request, s), "cache", entry.id, "upload", "cache.tzst")
        return {"ok": True, "signed_upload_url": url}

    async def finalize(s: ArtifactService, c: Caller, b: dict[str, Any]) -> dict[str, Any]:
        entry = await s.cache_for_upload(c, _str(b, "key") or "", _str(b, "version") or "")
        assert entry.id is not None
        entry = await s.finalize_cache(c, entry.id, _int64(_get(b, "size_bytes")))
        return {"ok": True, "entry_id": str(entry.id)}

    async def download(s: ArtifactService, c: Caller, b: dict[str, Any]) -> dict[str, Any]:
        restore = _get(b, "restore_keys") or []
        if not isinstance(restore, list) or not all(isinstance(k, str) for k in restore):
            raise ArtifactError("invalid_argument", "restore_keys must be a list of strings")
        keys = [_str(b, "key") or "", *restore]
        entry = await s.lookup_cache(c, keys, _str(b, "version") or "")
        if entry is None:
            return {"ok": False, "signed_download_url": "", "matched_key": ""}
        assert entry.id is not None
        url = s.signed_url(_base_url(request, s), "cache", entry.id, "download", "cache.tzst")
        return {"ok": True, "signed_download_url": url, "matched_key": entry.key}

    handlers = {
        "CreateCacheEntry": create,
        "FinalizeCacheEntryUpload": finalize,
        "GetCacheEntryDownloadURL": download,
    }
    handler = handlers.get(method)
    if handler is None:
        return _twirp_error("bad_route", f"no method {method}")
    return await _twirp(request, handler)


# --- blobs behind signed URLs (Azure Blob Storage's block blob calls) ---------------------------


def _azure_created() -> Response:
    return Response(status_code=201, headers={"x-ms-version": "2021-08-06", "ETag": '"0x1"'})


def _blob_error(exc: Exception) -> Response:
    code, message = _failure(exc)
    return Response(message, status_code=STATUS.get(code, 500), media_type="text/plain")


@runtime_router.put(BLOB + "/{kind}/{object_id}/{filename}")
async def put_blob(
    kind: Literal["artifact", "cache"],
    object_id: Id,
    filename: str,  # noqa: ARG001  (the name only matters to downloaders)
    request: Request,
) -> Response:
    service = _service(request)
    query = request.query_params
    try:
        service.check_blob_signature(kind, object_id, "upload", query.get("se"), query.get("sig"))
        md5 = md5_header_hex(request.headers.get("content-md5"))
        comp = (query.get("comp") or "").lower()
        if comp == "block":
            await service.stage_block(
                kind, object_id, query.get("blockid") or "", RequestBody(request), md5
            )
        elif comp == "blocklist":
            raw = bytearray()
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > 4 * 1024 * 1024:
                    raise ArtifactError("invalid_argument", "block list too large")
            await service.commit_blocks(kind, object_id, parse_block_list(bytes(raw)))
        elif comp == "":
            await service.put_whole(kind, object_id, RequestBody(request), md5)
        else:
            raise ArtifactError("invalid_argument", f"unsupported operation comp={comp}")
    except HANDLED as exc:
        return _blob_error(exc)
    return _azure_created()


@runtime_router.get(BLOB + "/{kind}/{object_id}/{filename}")
async def get_blob(
    kind: Literal["artifact", "cache"], object_id: Id, filename: str, request: Request
) -> Response:
    service = _service(request)
    query = request.query_params
    row: Artifact | CacheEntry
    try:
        service.check_blob_signature(kind, object_id, "download", query.get("se"), query.get("sig"))
        if kind == "artifact":
            artifact = await service.get_artifact(object_id)
            row, media = artifact, artifact.mime_type
        else:
            row, media = await service.get_ready_cache(object_id), "application/octet-stream"
        headers = {
            "Content-Length": str(row.size),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename, safe='')}",
        }
        # From the page cache to the socket by sendfile when the server and storage allow it.
        files = await service.blob_files(row) if can_sendfile(request) else None
        if files is not None:
            return FilesResponse(files, headers, media)
        stream = service.read_blob(row)
        first = await anext(stream, b"")  # a missing object fails here, before the headers
    except HANDLED as exc:
        return _blob_error(exc)

    async def body() -> AsyncIterator[bytes]:
        # Closed even when the client goes away mid-download, so no file handle lingers.
        async with contextlib.aclosing(stream):
            if first:
                yield first
            async for chunk in stream:
                yield chunk

    return StreamingResponse(body(), media_type=media, headers=headers)


# --- @actions/cache, service v1 (REST) --------------------------------------------------------


def _v1_error(exc: Exception) -> JSONResponse:
    code, message = _failure(exc)
    return JSONResponse({"message": message, "typeKey": code}, status_code=STATUS.get(code, 500))


@runtime_router.get(CACHE_V1 + "/cache")
async def v1_lookup(request: Request) -> Response:
    service = _service(request)
    try:
        caller = await service.authenticate(request.headers.get("authorization"))
        keys = [k for k in (request.query_params.get("keys") or "").split(",") if k]
        version = request.query_params.get("version") or ""
        entry = await service.lookup_cache(caller, keys, version)
    except HANDLED as exc:
        return _v1_error(exc)
    if entry is None:
        return Response(status_code=204)
    assert entry.id is not None
    url = service.signed_url(
        _base_url(request, service), "cache", entry.id, "download", "cache.tzst"
    )
    return JSONResponse(
        {
            "cacheKey": entry.key,
            "scope": entry.scope,
            "cacheVersion": entry.version,
            "creationTime": _timestamp(entry.created_at),
            "archiveLocation": url,
        }
    )


@runtime_router.get(CACHE_V1 + "/caches")
async def v1_list(request: Request) -> Response:
    service = _service(request)
    try:
        caller = await service.authenticate(request.headers.get("authorization"))
    except HANDLED as exc:
        return _v1_error(exc)
    key = request.query_params.get("key")
    entries = [e for e in await service.list_caches(caller.pipeline_id) if key in (None, e.key)]
    return JSONResponse(
        {
            "totalCount": len(entries),
            "artifactCaches": [
                {
                    "cacheKey": e.key,
                    "cacheVersion": e.version,
                    "scope": e.scope,
                    "creationTime": _timestamp(e.created_at),
                }
                for e in entries
            ],
        }
    )


@runtime_router.post(CACHE_V1 + "/caches")
async def v1_reserve(request: Request) -> Response:
    service = _service(request)
    try:
        caller = await service.authenticate(request.headers.get("authorization"))
        body = json.loads(await request.body() or b"{}")
        if not isinstance(body, dict):
            raise ArtifactError("invalid_argument", "the body must be a JSON object")
        size = _int64(body.get("cacheSize"))
        if size is not None and size > service.settings.artifact_max_bytes:
            raise ArtifactError(
                "invalid_argument",
                f"cache size {size} is over the limit of {service.settings.artifact_max_bytes}",
            )
        entry = await service.reserve_cache(
            caller, str(body.get("key") or ""), str(body.get("version") or "")
        )
    except json.JSONDecodeError:
        return _v1_error(ArtifactError("invalid_argument", "the body is not JSON"))
    except HANDLED as exc:
        # A reservation that exists is 409 (the toolkit then says another job may be saving it),
        # except an oversized one, which the toolkit reports from a 400.
        return _v1_error(exc)
    return JSONResponse({"cacheId": entry.id}, status_code=201)


def _content_range(value: str | None) -> int:
    # `bytes <start>-<end>/*`
    if not value or not value.startswith("bytes "):
        raise ArtifactError("invalid_argument", "Content-Range: bytes <start>-<end>/* required")
    start, _, _rest = value[6:].partition("-")
    if not start.isdigit():
        raise ArtifactError("invalid_argument", "Content-Range: bad start")
    return int(start)


@runtime_router.patch(CACHE_V1 + "/caches/{cache_id}")
async def v1_upload_chunk(cache_id: Id, request: Request) -> Response:
    service = _service(request)
    try:
        caller = await service.authenticate(request.headers.get("authorization"))
        start = _content_range(request.headers.get("content-range"))
        await service.stage_cache_range(caller, cache_id, start, RequestBody(request))
    except HANDLED as exc:
        return _v1_error(exc)
    return Response(status_code=204)


@runtime_router.post(CACHE_V1 + "/caches/{cache_id}")
async def v1_commit(cache_id: Id, request: Request) -> Response:
    service = _service(request)
    try:
        caller = await service.authenticate(request.headers.get("authorization"))
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_TWIRP_BODY:
                raise ArtifactError("invalid_argument", "request body too large")
        body = json.loads(raw or b"{}")
        size = _int64(body.get("size")) if isinstance(body, dict) else None
        if size is None:
            raise ArtifactError("invalid_argument", "size is required")
        await service.commit_cache_ranges(caller, cache_id, size)
    except json.JSONDecodeError:
        return _v1_error(ArtifactError("invalid_argument", "the body is not JSON"))
    except HANDLED as exc:
        return _v1_error(exc)
    return Response(status_code=204)
