"""The log writer: batches masked step output into sequenced chunks.

Output is buffered per build and flushed as chunks when a build's buffer reaches the chunk size
or when the flush interval elapses, never one row per line. A flush allocates a contiguous
range of seq numbers with one atomic UPDATE on builds.last_log_seq and inserts the chunks in the
same transaction, so seq has no gaps even when the API appends to the same build concurrently.
A failed flush keeps the buffered output, logs loudly, counts it, and retries: nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import insert, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import Database, record_event
from app.logs.hub import LogEvent
from app.metrics import Metrics
from app.models import Build, BuildJob, BuildLogChunk, LogChunkPublic
from app.models.types import utcnow

log = logging.getLogger(__name__)
_BATCH_CHUNKS = 16


@dataclass
class _Segment:
    job_name: str | None
    step_index: int | None
    text: str


@dataclass
class _Buffer:
    segments: list[_Segment] = field(default_factory=list)
    size: int = 0
    offsets: dict[str, int] = field(default_factory=dict)  # job -> runner source offset
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


async def insert_chunks(
    session: AsyncSession, build_id: int, parts: list[tuple[str | None, int | None, str]]
) -> list[LogChunkPublic]:
    """Allocate seqs and insert chunks in the caller's transaction; events publish on commit."""
    result = await session.exec(
        update(Build)
        .where(col(Build.id) == build_id)
        .values(last_log_seq=col(Build.last_log_seq) + len(parts))
        .returning(col(Build.last_log_seq))
    )
    last = result.scalar_one()
    first = last - len(parts) + 1
    now = utcnow()
    rows = [
        {
            "build_id": build_id,
            "seq": first + i,
            "job_name": job,
            "step_index": step,
            "content": text,
            "created_at": now,
        }
        for i, (job, step, text) in enumerate(parts)
    ]
    await session.exec(insert(BuildLogChunk), params=rows)
    chunks = [LogChunkPublic.model_validate(row) for row in rows]
    for chunk in chunks:
        record_event(session, LogEvent(build_id, chunk))
    return chunks


class LogWriter:
    def __init__(
        self, db: Database, metrics: Metrics, *, flush_interval: float, chunk_max_bytes: int
    ) -> None:
        self._db = db
        self._metrics = metrics
        self._interval = flush_interval
        self.chunk_max_bytes = chunk_max_bytes
        self._buffers: dict[int, _Buffer] = defaultdict(_Buffer)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="log-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for build_id in list(self._buffers):
            await self.flush(build_id)

    async def write(
        self,
        build_id: int,
        job_name: str | None,
        step_index: int | None,
        text: str,
        source_offset: int | None = None,
    ) -> None:
        """Buffer already-masked text. Waits for a flush when the buffer is full (backpressure),
        which in turn slows the runner's reads and so the step's writes."""
        buf = self._buffers[build_id]
        if text:
            last = buf.segments[-1] if buf.segments else None
            if last and (last.job_name, last.step_index) == (job_name, step_index):
                last.text += text
            else:
                buf.segments.append(_Segment(job_name, step_index, text))
            buf.size += len(text)
        if source_offset is not None and job_name is not None:
            buf.offsets[job_name] = source_offset
        # Store in batches of several chunks per transaction; wait only past the high-water mark
        # (backpressure), so the runner keeps reading while a batch is being stored.
        while buf.size >= self.chunk_max_bytes * _BATCH_CHUNKS:
            if not await self.flush(build_id):
                await asyncio.sleep(self._interval * 10)

    async def flush(self, build_id: int) -> bool:
        """Store what is buffered for a build. Returns False (keeping the data) on failure."""
        buf = self._buffers.get(build_id)
        if buf is None:
            return True
        async with buf.lock:
            if not buf.segments and not buf.offsets:
                self._forget(build_id, buf)
                return True
            segments, offsets = buf.segments, buf.offsets
            buf.segments, buf.offsets, buf.size = [], {}, 0
            parts = self._split(segments)
            try:
                async with self._db.transaction() as session:
                    if parts:
                        await insert_chunks(session, build_id, parts)
                    for job_name, offset in offsets.items():
                        await session.exec(
                            update(BuildJob)
                            .where(col(BuildJob.build_id) == build_id)
                            .where(col(BuildJob.name) == job_name)
                            .values(log_offset=offset)
                        )
            except Exception:
                self._metrics.log_store_failures.inc()
                log.exception(
                    "FAILED to store %d log chunk(s) of build %s; keeping them and retrying",
                    len(parts),
                    build_id,
                )
                # Put the data back in front of anything written meanwhile, preserving order.
                buf.segments = segments + buf.segments
                buf.offsets = {**offsets, **buf.offsets}
                buf.size = sum(len(s.text) for s in buf.segments)
                return False
            self._metrics.log_chunks.inc(len(parts))
            self._metrics.log_bytes.inc(sum(len(p[2].encode()) for p in parts))
            if not buf.segments and not buf.offsets:
                self._forget(build_id, buf)
            return True

    def _forget(self, build_id: int, buf: _Buffer) -> None:
        # Only drop the buffer we flushed: while we waited for its lock, it may have been dropped
        # and a new one (with newer output) created under the same build id.
        if self._buffers.get(build_id) is buf:
            del self._buffers[build_id]

    def _split(self, segments: list[_Segment]) -> list[tuple[str | None, int | None, str]]:
        """Cut segments into chunks of at most chunk_max_bytes, preferring line ends."""
        parts: list[tuple[str | None, int | None, str]] = []
        limit = self.chunk_max_bytes
        for seg in segments:
            text = seg.text
            while text:
                piece = text[:limit]
                while len(piece.encode()) > limit:  # multi-byte characters
                    piece = piece[: len(piece) * 3 // 4]
                if len(piece) < len(text):
                    cut = piece.rfind("\n") + 1
                    if cut > 0:
                        piece = piece[:cut]
                parts.append((seg.job_name, seg.step_index, piece))
                text = text[len(piece) :]
        return parts

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            for build_id in list(self._buffers):
                await self.flush(build_id)
