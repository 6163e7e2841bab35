"""The log writer: batches masked step output into sequenced chunks.

Output is buffered per build and flushed as chunks when a build's buffer reaches the chunk size
or when the flush interval elapses, never one row per line. Each flush is one transaction through
app/logs/store.py (seq range + rows together; COPY on Postgres), so seq has no gaps even when the
API appends to the same build concurrently.

When the database refuses a flush, what happens depends on why:
- the data (a DataError or a constraint): retrying the same rows can never succeed, so the batch
  is stored again chunk by chunk, and a chunk refused on its own is stored as a visible note in its
  place (`[ci-executor: ... could not be stored: ...]`). Nothing is retried forever.
- anything else (connection lost, database restarting): the output is kept, counted, logged, and
  retried with exponential backoff. A step writing meanwhile waits (backpressure) for at most
  BLOCK_SECONDS, then runs on; past MAX_BUFFER_BYTES buffered for one build, newer output is
  dropped and a note saying how much is stored once the database is back. A database outage never
  blocks a step forever nor grows memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy import update
from sqlmodel import col

from app.db import Database
from app.logs.store import Part, insert_chunks
from app.metrics import Metrics
from app.models import BuildJob

log = logging.getLogger(__name__)
_BATCH_CHUNKS = 16
# Retry delays for transient failures: from one flush interval, doubling, up to this cap.
MAX_BACKOFF_SECONDS = 5.0
# How long a step's write waits for the database before it runs on without backpressure.
BLOCK_SECONDS = 30.0
# Output kept per build while the database is unreachable; what comes past it is counted only.
MAX_BUFFER_BYTES = 64 * 1024 * 1024


def is_data_error(error: BaseException) -> bool:
    """True when the database refused the rows themselves (retrying them cannot help)."""
    if isinstance(error, sa_exc.StatementError) and not isinstance(error, sa_exc.DBAPIError):
        # Raised before the statement reached the database: a value that could not be bound.
        return isinstance(error.orig, ValueError | UnicodeError)
    if isinstance(error, sa_exc.DataError | sa_exc.IntegrityError):
        return True
    return isinstance(
        error,
        asyncpg.DataError | asyncpg.IntegrityConstraintViolationError | ValueError | UnicodeError,
    )


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
    failures: int = 0  # consecutive transient failures
    retry_at: float = 0.0  # monotonic time before which the flush loop leaves it alone
    dropped: int = 0  # characters dropped past MAX_BUFFER_BYTES, noted once stored again


class LogWriter:
    def __init__(
        self,
        db: Database,
        metrics: Metrics,
        *,
        flush_interval: float,
        chunk_max_bytes: int,
        block_seconds: float = BLOCK_SECONDS,
        max_buffer_bytes: int = MAX_BUFFER_BYTES,
    ) -> None:
        self._db = db
        self._metrics = metrics
        self._interval = flush_interval
        self.chunk_max_bytes = chunk_max_bytes
        self._block_seconds = block_seconds
        self._max_buffer = max(max_buffer_bytes, chunk_max_bytes * _BATCH_CHUNKS)
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
            if buf.size + len(text) > self._max_buffer:
                # The database has been unreachable for long: keep memory bounded.
                buf.dropped += len(text)
                self._metrics.log_store_failures.inc()
                text = ""
            else:
                last = buf.segments[-1] if buf.segments else None
                if last and (last.job_name, last.step_index) == (job_name, step_index):
                    last.text += text
                else:
                    buf.segments.append(_Segment(job_name, step_index, text))
                buf.size += len(text)
        if source_offset is not None and job_name is not None and not buf.dropped:
            # After a drop the runner's offset no longer matches what is stored; keep the old one
            # so a re-attaching runner re-reads rather than skips.
            buf.offsets[job_name] = source_offset
        # Store in batches of several chunks per transaction; wait only past the high-water mark
        # (backpressure), so the runner keeps reading while a batch is being stored.
        deadline = time.monotonic() + self._block_seconds
        while buf.size >= self.chunk_max_bytes * _BATCH_CHUNKS:
            if await self.flush(build_id):
                continue
            if time.monotonic() >= deadline:
                return  # stop holding the step back; the flush loop keeps retrying
            await asyncio.sleep(self._backoff(buf))

    def _backoff(self, buf: _Buffer) -> float:
        return float(min(MAX_BACKOFF_SECONDS, self._interval * 2 ** min(buf.failures, 16)))

    async def flush(self, build_id: int) -> bool:
        """Store what is buffered for a build. Returns False (keeping the data) when the database
        failed for a reason other than the data itself; the data is then retried later."""
        buf = self._buffers.get(build_id)
        if buf is None:
            return True
        async with buf.lock:
            if not buf.segments and not buf.offsets and not buf.dropped:
                self._forget(build_id, buf)
                return True
            segments, offsets, dropped = buf.segments, buf.offsets, buf.dropped
            buf.segments, buf.offsets, buf.size, buf.dropped = [], {}, 0, 0
            parts = self._split(segments)
            if dropped:
                last = segments[-1] if segments else _Segment(None, None, "")
                note = (
                    f"\n[ci-executor: {dropped} characters of output were dropped while the "
                    "database was unreachable]\n"
                )
                parts.append((last.job_name, last.step_index, note))
            try:
                await self._store(build_id, parts, offsets)
            except Exception as error:
                left = parts
                if is_data_error(error):
                    # Never retried as is: stored piece by piece (see the module doc).
                    left = await self._store_each(build_id, parts, offsets, error)
                if left:
                    self._failed(build_id, buf, len(left))
                    # Put the data back in front of anything written meanwhile, in order.
                    buf.segments = [_Segment(*p) for p in left] + buf.segments
                    buf.offsets = {**offsets, **buf.offsets}
                    buf.size = sum(len(s.text) for s in buf.segments)
                    return False
            buf.failures, buf.retry_at = 0, 0.0
            self._metrics.log_chunks.inc(len(parts))
            self._metrics.log_bytes.inc(sum(len(p[2].encode(errors="replace")) for p in parts))
            if not buf.segments and not buf.offsets and not buf.dropped:
                self._forget(build_id, buf)
            return True

    def _failed(self, build_id: int, buf: _Buffer, count: int) -> None:
        self._metrics.log_store_failures.inc()
        buf.failures += 1
        delay = self._backoff(buf)
        buf.retry_at = time.monotonic() + delay
        log.exception(
            "FAILED to store %d log chunk(s) of build %s; keeping them, retrying in %.1f s",
            count,
            build_id,
            delay,
        )

    async def _store(self, build_id: int, parts: list[Part], offsets: dict[str, int]) -> None:
        async with self._db.transaction() as session:
            await insert_chunks(session, build_id, parts, copy=True)
            for job_name, offset in offsets.items():
                await session.exec(
                    update(BuildJob)
                    .where(col(BuildJob.build_id) == build_id)
                    .where(col(BuildJob.name) == job_name)
                    .values(log_offset=offset)
                )

    async def _store_each(
        self, build_id: int, parts: list[Part], offsets: dict[str, int], error: Exception
    ) -> list[Part]:
        """The batch was refused for its data: store its chunks one per transaction, and a chunk
        refused on its own as a note in its place. The runner offsets go with the last one, so a
        re-attaching runner never skips output that was not stored. Returns the parts left when
        a transient failure interrupts (they are kept and retried like any other)."""
        self._metrics.log_store_failures.inc()
        log.warning(
            "the database refused %d log chunk(s) of build %s (%s); storing them one by one",
            len(parts),
            build_id,
            type(error).__name__,
        )
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            try:
                try:
                    await self._store(build_id, [part], offsets if last else {})
                except Exception as refused:
                    if not is_data_error(refused):
                        raise
                    job, step, text = part
                    note = (
                        f"[ci-executor: {len(text.encode(errors='replace'))} bytes of output "
                        "could not be stored: the database refused them "
                        f"({type(refused).__name__})]\n"
                    )
                    await self._store(build_id, [(job, step, note)], offsets if last else {})
            except Exception:
                return parts[i:]
        return []

    def _forget(self, build_id: int, buf: _Buffer) -> None:
        # Only drop the buffer we flushed: while we waited for its lock, it may have been dropped
        # and a new one (with newer output) created under the same build id.
        if self._buffers.get(build_id) is buf:
            del self._buffers[build_id]

    def _split(self, segments: list[_Segment]) -> list[Part]:
        """Cut segments into chunks of at most chunk_max_bytes, preferring line ends."""
        parts: list[Part] = []
        limit = self.chunk_max_bytes
        for seg in segments:
            text = seg.text
            while text:
                piece = text[:limit]
                if not piece.isascii():
                    while len(piece.encode(errors="replace")) > limit:  # multi-byte characters
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
            now = time.monotonic()
            for build_id, buf in list(self._buffers.items()):
                if buf.retry_at <= now:
                    await self.flush(build_id)
