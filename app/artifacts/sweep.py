"""Retention and cleanup: expired artifacts, abandoned uploads, blobs of deleted builds, and the
cache size cap, run periodically by the router's lifespan (`run_sweeper`)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sqlalchemy import delete
from sqlmodel import col, select

from app.artifacts.common import STALE_UPLOAD
from app.artifacts.models import Artifact, ArtifactStatus, CacheEntry, CacheStatus
from app.artifacts.storage import StorageError
from app.models import Build
from app.models.types import utcnow

if TYPE_CHECKING:
    from app.artifacts.service import ArtifactService

log = logging.getLogger(__name__)


async def sweep(self: ArtifactService) -> dict[str, int]:
    """Expired artifacts, abandoned uploads, blobs of deleted builds, caches over the cap."""
    now = utcnow()
    counts = {"expired": 0, "abandoned": 0, "orphaned": 0, "evicted": 0}
    async with self.db.transaction() as session:
        expired = list(
            (await session.exec(select(Artifact).where(col(Artifact.expires_at) <= now))).all()
        )
        abandoned = list(
            (
                await session.exec(
                    select(Artifact).where(
                        col(Artifact.status) != ArtifactStatus.ready,
                        col(Artifact.created_at) < now - STALE_UPLOAD,
                    )
                )
            ).all()
        )
        stale_caches = list(
            (
                await session.exec(
                    select(CacheEntry).where(
                        CacheEntry.status != CacheStatus.ready,
                        col(CacheEntry.created_at) < now - STALE_UPLOAD,
                    )
                )
            ).all()
        )
        ids = [a.id for a in expired + abandoned]
        if ids:
            await session.exec(delete(Artifact).where(col(Artifact.id).in_(ids)))
        if stale_caches:
            await session.exec(
                delete(CacheEntry).where(col(CacheEntry.id).in_([c.id for c in stale_caches]))
            )
    for artifact in expired + abandoned:
        assert artifact.id is not None
        await self.storage.delete(self._final_key(artifact))
        await self.staged.drop("artifact", artifact.id)
    for entry in stale_caches:
        assert entry.id is not None
        await self._drop_cache_blobs(entry.id)
    counts["expired"] = len(expired)
    counts["abandoned"] = len(abandoned) + len(stale_caches)
    counts["orphaned"] = await _sweep_orphans(self)
    counts["evicted"] = len(await self.evict_caches())
    return counts


async def _sweep_orphans(self: ArtifactService) -> int:
    """Blobs whose rows are gone (a deleted build cascades its artifact rows)."""
    removed = 0
    build_dirs = [n for n in await self.storage.list_children("artifacts") if n.isdigit()]
    if build_dirs:
        async with self.db.read() as session:
            alive = set(
                (
                    await session.exec(
                        select(Build.id).where(col(Build.id).in_([int(n) for n in build_dirs]))
                    )
                ).all()
            )
        for name in build_dirs:
            if int(name) not in alive:
                await self.storage.delete_prefix(f"artifacts/{name}")
                removed += 1
    uploads = await self.storage.list_children("uploads")
    for name in uploads:
        kind, _, raw = name.partition("-")
        if not raw.isdigit() or kind not in ("artifact", "cache"):
            continue
        async with self.db.read() as session:
            row = await session.get(Artifact if kind == "artifact" else CacheEntry, int(raw))
        if row is None:
            await self.storage.delete_prefix(f"uploads/{name}")
            removed += 1
    return removed


async def run_sweeper(self: ArtifactService, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            counts = await sweep(self)
            if any(counts.values()):
                log.info("artifact sweep: %s", counts)
        except (StorageError, OSError) as exc:
            log.warning("artifact sweep failed (storage): %s", exc)
        except Exception:
            log.exception("artifact sweep failed")
