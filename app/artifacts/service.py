"""Artifacts and caches: the state behind the toolkit-facing endpoints and the public API.

Blobs are written outside any database transaction (an upload may take minutes); rows change in
short transactions around them. An upload is staged as blocks (`staging_key`) and composed when
its block list is committed; an artifact's digest at finalize is checked against the bytes stored.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from sqlalchemy import delete, func, update
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from app.artifacts import sweep
from app.artifacts.common import (
    ACTIVE,
    STALE_UPLOAD,
    ArtifactError,
    BlobKind,
    Caller,
    StagedBlocks,
    _block_name,
    _block_rank,
    _hashed,
    _invalid,
    _not_found,
    check_uploadable,
    staging_key,
    validate_cache_key,
    validate_name,
)
from app.artifacts.models import Artifact, ArtifactStatus, CacheEntry, CacheStatus
from app.artifacts.storage import Expect, Storage, StoredObject
from app.artifacts.tokens import (
    InvalidToken,
    check_signature,
    issue_runtime_token,
    signed_query,
    verify_runtime_token,
)
from app.config import Settings
from app.db import Database
from app.models import Build
from app.models.types import utcnow

log = logging.getLogger(__name__)


def _cache_entry(caller: Caller, key: str, version: str) -> SelectOfScalar[CacheEntry]:
    """The entry for (key, version) in the caller's pipeline and branch scope: at most one."""
    return select(CacheEntry).where(
        CacheEntry.pipeline_id == caller.pipeline_id,
        CacheEntry.scope == caller.branch,
        CacheEntry.key == key,
        CacheEntry.version == version,
    )


class ArtifactService:
    def __init__(self, db: Database, storage: Storage, settings: Settings, secret: str) -> None:
        self.db = db
        self.storage = storage
        self.settings = settings
        self.secret = secret
        self.staged = StagedBlocks(storage)

    # --- tokens and the runtime environment ------------------------------------------------

    def runtime_token(self, build_id: int, job_name: str) -> str:
        return issue_runtime_token(
            self.secret, build_id, job_name, self.settings.actions_token_ttl_seconds
        )

    def public_url(self) -> str:
        if self.settings.actions_public_url:
            return self.settings.actions_public_url.rstrip("/")
        return f"http://{self.settings.host}:{self.settings.port}"

    def runtime_env(self, build_id: int, job_name: str) -> dict[str, str]:
        """What a step needs so the toolkit finds our services (the seam for the runtime)."""
        base = self.public_url()
        return {
            "ACTIONS_RUNTIME_TOKEN": self.runtime_token(build_id, job_name),
            "ACTIONS_RUNTIME_URL": f"{base}/_actions/runtime/",
            "ACTIONS_RESULTS_URL": f"{base}/",
            "ACTIONS_CACHE_URL": f"{base}/_actions/cache/",
        }

    async def authenticate(self, authorization: str | None) -> Caller:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ArtifactError("unauthenticated", "missing bearer token (ACTIONS_RUNTIME_TOKEN)")
        try:
            claims = verify_runtime_token(self.secret, token.strip())
        except InvalidToken as exc:
            raise ArtifactError("unauthenticated", str(exc)) from None
        async with self.db.read() as session:
            build = await session.get(Build, claims.build_id)
        if build is None or build.status not in ACTIVE:
            raise ArtifactError("unauthenticated", "the build of this token has finished")
        return Caller(claims, build.pipeline_id, build.branch or "")

    def check_blob_signature(
        self,
        kind: BlobKind,
        object_id: int,
        operation: Literal["upload", "download"],
        expires: str | None,
        signature: str | None,
    ) -> None:
        try:
            check_signature(self.secret, kind, object_id, operation, expires, signature)
        except InvalidToken as exc:
            raise ArtifactError("unauthenticated", str(exc)) from None

    def signed_url(
        self,
        base_url: str,
        kind: BlobKind,
        object_id: int,
        operation: Literal["upload", "download"],
        filename: str = "blob",
    ) -> str:
        query = signed_query(
            self.secret, kind, object_id, operation, self.settings.actions_signed_url_ttl_seconds
        )
        return f"{base_url.rstrip('/')}/_actions/blob/{kind}/{object_id}/{filename}?{query}"

    # --- blobs (shared by artifacts and caches) ----------------------------------------------

    @staticmethod
    def _final_key(row: Artifact | CacheEntry) -> str:
        if isinstance(row, Artifact):
            return f"artifacts/{row.build_id}/{row.id}"
        return f"caches/{row.id}"

    async def _uploadable(self, kind: BlobKind, object_id: int) -> Artifact | CacheEntry:
        await check_uploadable(self.db, kind, object_id)
        async with self.db.read() as session:
            row: Artifact | CacheEntry | None = await session.get(
                Artifact if kind == "artifact" else CacheEntry, object_id
            )
        if row is None:  # deleted in between
            raise _not_found(f"no such {kind} upload")
        return row

    async def stage_block(
        self,
        kind: BlobKind,
        object_id: int,
        block_id: str,
        body: AsyncIterable[bytes],
        md5: str | None,
    ) -> StoredObject:
        if not block_id or len(block_id) > 1024:
            raise _invalid("blockid must be 1-1024 characters")
        key = f"{staging_key(kind, object_id)}/{_block_name(block_id)}"
        hashed = _hashed(kind)
        if hashed:
            # Clients number their blocks (Azure SDK: base64 of a prefix and a zero-padded
            # index): the storage hashes them in that order while they arrive.
            self.storage.announce(key, _block_rank(block_id))
        await check_uploadable(self.db, kind, object_id)
        await self.staged.add(kind, object_id)
        expect = Expect(
            md5=md5, max_bytes=self.settings.artifact_max_bytes, staging=True, hashed=hashed
        )
        return await self.storage.put(key, body, expect)

    async def commit_blocks(
        self, kind: BlobKind, object_id: int, block_ids: list[str]
    ) -> StoredObject:
        row = await self._uploadable(kind, object_id)
        staging = staging_key(kind, object_id)
        keys = [f"{staging}/{_block_name(b)}" for b in block_ids]
        for key in keys:
            if await self.storage.size(key) is None:
                raise _invalid("the block list names a block that was never uploaded")

        expect = Expect(max_bytes=self.settings.artifact_max_bytes, hashed=_hashed(kind))
        stored = await self.storage.compose(self._final_key(row), keys, expect)
        await self._record_blob(kind, object_id, stored)
        await self.staged.drop(kind, object_id)
        return stored

    async def put_whole(
        self, kind: BlobKind, object_id: int, body: AsyncIterable[bytes], md5: str | None
    ) -> StoredObject:
        row = await self._uploadable(kind, object_id)
        stored = await self.storage.put(
            self._final_key(row),
            body,
            Expect(md5=md5, max_bytes=self.settings.artifact_max_bytes, hashed=_hashed(kind)),
        )
        await self._record_blob(kind, object_id, stored)
        return stored

    async def _record_blob(self, kind: BlobKind, object_id: int, stored: StoredObject) -> None:
        async with self.db.transaction() as session:
            if kind == "artifact":
                await session.exec(
                    update(Artifact)
                    .where(col(Artifact.id) == object_id)
                    .values(size=stored.size, sha256=stored.sha256, status=ArtifactStatus.uploaded)
                )
            else:
                await session.exec(
                    update(CacheEntry)
                    .where(col(CacheEntry.id) == object_id)
                    .values(size=stored.size, status=CacheStatus.uploaded)
                )

    # --- artifacts ---------------------------------------------------------------------------

    async def create_artifact(
        self, caller: Caller, name: str, expires_at: datetime | None, mime_type: str | None
    ) -> Artifact:
        validate_name(name)
        now = utcnow()
        default = now + timedelta(days=self.settings.artifact_retention_days)
        # retention-days can shorten the default, never extend it (as on GitHub).
        expires = min(expires_at, default) if expires_at is not None else default
        if expires <= now:
            raise _invalid("expires_at is in the past")
        build_id = caller.claims.build_id
        async with self.db.transaction() as session:
            existing = (
                await session.exec(
                    select(Artifact).where(Artifact.build_id == build_id, Artifact.name == name)
                )
            ).first()
            if existing is not None and existing.status == ArtifactStatus.ready:
                raise ArtifactError(
                    "already_exists",
                    f"an artifact named {name!r} already exists in this build; delete it first "
                    "(upload-artifact: overwrite: true) or choose another name",
                )
            if existing is not None:
                # A retried upload of an unfinished artifact starts over.
                await session.delete(existing)
                await session.flush()
            artifact = Artifact(
                build_id=build_id,
                job_name=caller.claims.job_name,
                name=name,
                mime_type=(mime_type or "application/zip")[:255],
                expires_at=expires,
            )
            session.add(artifact)
            await session.flush()
            stale = existing.id if existing is not None else None
        if stale is not None:
            await self.staged.drop("artifact", stale)
            await self.storage.delete(f"artifacts/{build_id}/{stale}")
        return artifact

    async def finalize_artifact(
        self, caller: Caller, name: str, size: int | None, digest: str | None
    ) -> Artifact:
        async with self.db.transaction() as session:
            artifact = (
                await session.exec(
                    select(Artifact).where(
                        Artifact.build_id == caller.claims.build_id, Artifact.name == name
                    )
                )
            ).first()
            if artifact is None:
                raise _not_found(f"no artifact named {name!r} is being uploaded in this build")
            if artifact.status == ArtifactStatus.ready:
                return artifact
            if artifact.status != ArtifactStatus.uploaded:
                raise ArtifactError(
                    "failed_precondition", f"artifact {name!r} has no uploaded content yet"
                )
            if size is not None and size != artifact.size:
                raise _invalid(f"size mismatch: {size} announced, {artifact.size} stored")
            if digest:
                algorithm, _, value = digest.partition(":")
                if algorithm != "sha256" or value.lower() != artifact.sha256:
                    raise _invalid(
                        f"digest mismatch: {digest} announced, sha256:{artifact.sha256} stored"
                    )
            artifact.status = ArtifactStatus.ready
            artifact.finalized_at = utcnow()
            session.add(artifact)
            await session.flush()
            return artifact

    async def list_artifacts(
        self, build_id: int, name: str | None = None, artifact_id: int | None = None
    ) -> list[Artifact]:
        query = select(Artifact).where(
            Artifact.build_id == build_id,
            Artifact.status == ArtifactStatus.ready,
            col(Artifact.expires_at) > utcnow(),
        )
        if name is not None:
            query = query.where(Artifact.name == name)
        if artifact_id is not None:
            query = query.where(Artifact.id == artifact_id)
        async with self.db.read() as session:
            return list((await session.exec(query.order_by(col(Artifact.id)))).all())

    async def get_artifact(self, artifact_id: int) -> Artifact:
        async with self.db.read() as session:
            artifact = await session.get(Artifact, artifact_id)
        if (
            artifact is None
            or artifact.status != ArtifactStatus.ready
            or artifact.expires_at <= utcnow()
        ):
            raise _not_found("no such artifact (or it has expired)")
        return artifact

    async def delete_artifact(self, build_id: int, name: str) -> Artifact:
        async with self.db.transaction() as session:
            artifact = (
                await session.exec(
                    select(Artifact).where(
                        Artifact.build_id == build_id,
                        Artifact.name == name,
                        Artifact.status == ArtifactStatus.ready,
                    )
                )
            ).first()
            if artifact is None:
                raise _not_found(f"no artifact named {name!r} in this build")
            await session.delete(artifact)
        await self.storage.delete(self._final_key(artifact))
        return artifact

    # --- caches ------------------------------------------------------------------------------

    def _scopes(self, caller: Caller) -> list[str]:
        """Where a build may restore from: its own branch, then the default branch (GitHub)."""
        scopes = [caller.branch]
        if self.settings.cache_default_branch not in scopes:
            scopes.append(self.settings.cache_default_branch)
        return scopes

    async def reserve_cache(self, caller: Caller, key: str, version: str) -> CacheEntry:
        validate_cache_key(key)
        if not version or len(version) > 128:
            raise _invalid("cache version must be 1-128 characters")
        stale_ids: list[int] = []
        async with self.db.transaction() as session:
            existing = (await session.exec(_cache_entry(caller, key, version))).first()
            if existing is not None:
                abandoned = (
                    existing.status != CacheStatus.ready
                    and existing.created_at < utcnow() - STALE_UPLOAD
                )
                if not abandoned:
                    raise ArtifactError(
                        "already_exists",
                        f"cache entry {key!r} already exists or another job is creating it",
                    )
                assert existing.id is not None
                stale_ids.append(existing.id)
                await session.delete(existing)
                await session.flush()
            entry = CacheEntry(
                pipeline_id=caller.pipeline_id,
                scope=caller.branch,
                key=key,
                version=version,
                build_id=caller.claims.build_id,
            )
            session.add(entry)
            await session.flush()
        for stale in stale_ids:
            await self._drop_cache_blobs(stale)
        return entry

    async def cache_for_upload(self, caller: Caller, key: str, version: str) -> CacheEntry:
        async with self.db.read() as session:
            entry = (await session.exec(_cache_entry(caller, key, version))).first()
        if entry is None:
            raise _not_found(f"no cache entry {key!r} is being saved by this build")
        return entry

    async def get_cache(self, caller: Caller, cache_id: int) -> CacheEntry:
        async with self.db.read() as session:
            entry = await session.get(CacheEntry, cache_id)
        if (
            entry is None
            or entry.pipeline_id != caller.pipeline_id
            or entry.build_id != caller.claims.build_id
        ):
            raise _not_found("no such cache reservation in this build")
        return entry

    async def stage_cache_range(
        self, caller: Caller, cache_id: int, start: int, body: AsyncIterable[bytes]
    ) -> None:
        """A v1 PATCH chunk: stored as a block named by its offset."""
        await self.get_cache(caller, cache_id)
        await self._uploadable("cache", cache_id)
        await self.staged.add("cache", cache_id)
        key = f"{staging_key('cache', cache_id)}/{start:020d}"
        await self.storage.put(
            key,
            body,
            Expect(
                max_bytes=self.settings.artifact_max_bytes, staging=True, hashed=_hashed("cache")
            ),
        )

    async def commit_cache_ranges(self, caller: Caller, cache_id: int, size: int) -> CacheEntry:
        """v1 commit: the chunks must tile [0, size) exactly."""
        await self.get_cache(caller, cache_id)
        staging = staging_key("cache", cache_id)
        names = await self.storage.list_children(staging)
        offset = 0
        for name in names:
            if int(name) != offset:
                raise _invalid(f"cache chunks do not cover the archive (gap at byte {offset})")
            length = await self.storage.size(f"{staging}/{name}")
            offset += length or 0
        if offset != size:
            raise _invalid(f"size mismatch: {size} announced, {offset} uploaded")
        # Block ids equal to their staged names: commit them in offset order.
        row = await self._uploadable("cache", cache_id)
        parts = [f"{staging}/{name}" for name in names]
        stored = await self.storage.compose(
            self._final_key(row), parts, Expect(size=size, hashed=_hashed("cache"))
        )
        await self._record_blob("cache", cache_id, stored)
        await self.staged.drop("cache", cache_id)
        return await self.finalize_cache(caller, cache_id, size)

    async def finalize_cache(self, caller: Caller, cache_id: int, size: int | None) -> CacheEntry:
        async with self.db.transaction() as session:
            entry = await session.get(CacheEntry, cache_id)
            if entry is None or entry.build_id != caller.claims.build_id:
                raise _not_found("no such cache reservation in this build")
            if entry.status != CacheStatus.ready:
                if entry.status != CacheStatus.uploaded:
                    raise ArtifactError("failed_precondition", "the cache archive was not uploaded")
                if size is not None and size != entry.size:
                    raise _invalid(f"size mismatch: {size} announced, {entry.size} stored")
                now = utcnow()
                entry.status = CacheStatus.ready
                entry.created_at = now
                entry.last_used_at = now
                session.add(entry)
                await session.flush()
        await self.evict_caches()
        return entry

    async def lookup_cache(
        self, caller: Caller, keys: list[str], version: str
    ) -> CacheEntry | None:
        """GitHub's matching: in the build's branch, then the default branch: the primary key
        exactly, then each restore key as a prefix (newest first)."""
        if not keys or len(keys) > 10:
            raise _invalid("between 1 and 10 keys")
        for key in keys:
            validate_cache_key(key)
        found: CacheEntry | None = None
        async with self.db.read() as session:
            for scope in self._scopes(caller):
                base = select(CacheEntry).where(
                    CacheEntry.pipeline_id == caller.pipeline_id,
                    CacheEntry.scope == scope,
                    CacheEntry.version == version,
                    CacheEntry.status == CacheStatus.ready,
                )
                found = (await session.exec(base.where(CacheEntry.key == keys[0]))).first()
                for prefix in keys[1:]:
                    if found is not None:
                        break
                    found = (
                        await session.exec(
                            base.where(
                                func.substr(col(CacheEntry.key), 1, len(prefix)) == prefix
                            ).order_by(col(CacheEntry.created_at).desc(), col(CacheEntry.id).desc())
                        )
                    ).first()
                if found is not None:
                    break
        if found is None:
            return None
        async with self.db.transaction() as session:
            await session.exec(
                update(CacheEntry)
                .where(col(CacheEntry.id) == found.id)
                .values(last_used_at=utcnow())
            )
        return found

    def read_blob(self, row: Artifact | CacheEntry) -> AsyncGenerator[bytes, None]:
        return self.storage.read(self._final_key(row))

    async def blob_files(self, row: Artifact | CacheEntry) -> list[tuple[Path, int]] | None:
        """A ready blob's local files, in order (None: the storage keeps none)."""
        return await self.storage.files(self._final_key(row))

    async def get_ready_cache(self, cache_id: int) -> CacheEntry:
        async with self.db.read() as session:
            entry = await session.get(CacheEntry, cache_id)
        if entry is None or entry.status != CacheStatus.ready:
            raise _not_found("no such cache entry (it may have been evicted)")
        return entry

    async def list_caches(self, pipeline_id: str, branch: str | None = None) -> list[CacheEntry]:
        query = select(CacheEntry).where(
            CacheEntry.pipeline_id == pipeline_id, CacheEntry.status == CacheStatus.ready
        )
        if branch is not None:
            query = query.where(CacheEntry.scope == branch)
        async with self.db.read() as session:
            rows = await session.exec(query.order_by(col(CacheEntry.last_used_at).desc()))
            return list(rows.all())

    async def delete_caches(
        self,
        pipeline_id: str,
        *,
        cache_id: int | None = None,
        key: str | None = None,
        branch: str | None = None,
    ) -> list[CacheEntry]:
        query = select(CacheEntry).where(CacheEntry.pipeline_id == pipeline_id)
        if cache_id is not None:
            query = query.where(CacheEntry.id == cache_id)
        if key is not None:
            query = query.where(CacheEntry.key == key)
        if branch is not None:
            query = query.where(CacheEntry.scope == branch)
        async with self.db.transaction() as session:
            doomed = list((await session.exec(query)).all())
            if doomed:
                await session.exec(
                    delete(CacheEntry).where(col(CacheEntry.id).in_([e.id for e in doomed]))
                )
        for entry in doomed:
            assert entry.id is not None
            await self._drop_cache_blobs(entry.id)
        return doomed

    async def _drop_cache_blobs(self, cache_id: int) -> None:
        await self.storage.delete(f"caches/{cache_id}")
        await self.staged.drop("cache", cache_id)

    async def evict_caches(self) -> list[CacheEntry]:
        """Least recently used first until the ready caches fit CACHE_MAX_BYTES."""
        limit = self.settings.cache_max_bytes
        async with self.db.transaction() as session:
            total = (
                await session.exec(
                    select(func.coalesce(func.sum(CacheEntry.size), 0)).where(
                        CacheEntry.status == CacheStatus.ready
                    )
                )
            ).one()
            excess = int(total) - limit
            doomed: list[CacheEntry] = []
            if excess > 0:
                rows = await session.exec(
                    select(CacheEntry)
                    .where(CacheEntry.status == CacheStatus.ready)
                    .order_by(col(CacheEntry.last_used_at), col(CacheEntry.id))
                )
                for entry in rows:
                    if excess <= 0:
                        break
                    doomed.append(entry)
                    excess -= entry.size
                await session.exec(
                    delete(CacheEntry).where(col(CacheEntry.id).in_([e.id for e in doomed]))
                )
        for entry in doomed:
            assert entry.id is not None
            log.info("cache %s (%s bytes) evicted: over CACHE_MAX_BYTES", entry.key, entry.size)
            await self._drop_cache_blobs(entry.id)
        return doomed

    # --- retention and cleanup ---------------------------------------------------------------

    async def purge_build(self, build_id: int) -> None:
        """Delete a build's artifact blobs (call when a build is deleted; the rows cascade)."""
        await self.storage.delete_prefix(f"artifacts/{build_id}")

    async def sweep(self) -> dict[str, int]:
        """One pass of retention and cleanup (app/artifacts/sweep.py)."""
        return await sweep.sweep(self)

    async def run_sweeper(self, interval: float) -> None:
        await sweep.run_sweeper(self, interval)


__all__ = ["ArtifactService"]
