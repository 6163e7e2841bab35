"""The log writer: batches masked step output into sequenced chunks.

Output is buffered per build and flushed as chunks when a build's buffer reaches a batch of
chunks or when the flush interval elapses, never one row per line. Each flush is one transaction
through app/logs/store.py (seq range + rows together; COPY on Postgres), so seq has no gaps even
when the API appends to the same build concurrently. A full batch is stored in the background
while the step's next output is read and masked (the database and the Python side work at the
same time); a writer waits only when a second batch is full before the first is stored.

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
import sqlite3
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy import update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import Database, GroupCommit
from app.logs.store import Part, insert_chunks
from app.metrics import Metrics
from app.models import BuildJob

log = logging.getLogger(__name__)
# Output stored per flush transaction when a step writes fast: each commit costs round trips
# and a WAL flush, so 100 MB goes in 25 commits rather than 1,600 of one 64 KiB chunk each
# (bench/log_ingest.py: 4 MiB batches measured ~1.1x psql \copy against ~1.4x with 1 MiB).
# At most two batches are held per build before a write waits (one being stored, one filling).
BATCH_BYTES = 4 * 1024 * 1024
# A flush with at most this much output joins the group commit of small flushes: a burst of
# builds' step starts then takes a few transactions (and on SQLite write-lock turns), not one
# each. A bigger batch keeps its own transaction, so it never holds small ones up.
GROUP_CHARS = 64 * 1024
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
    # The drivers' own errors: what Database.commit_alone raises (no SQLAlchemy around it).
    return isinstance(
        error,
        asyncpg.DataError
        | asyncpg.IntegrityConstraintViolationError
        | sqlite3.DataError
        | sqlite3.IntegrityError
        | ValueError
        | UnicodeError,
    )


# A status change to store in the same transaction as the build's next log batch.
Transition = Callable[[AsyncSession], Awaitable[object]]


class CommitsAlone(Protocol):
    """A transition that, when it is all a flush has to store, can commit by itself without a
    session (a step's end and the next one's start: app/services/state.py StepChange)."""

    @property
    def alone(self) -> bool: ...

    def commit_alone(self, db: Database) -> Awaitable[object]: ...


def _alone(transitions: Sequence[Transition]) -> CommitsAlone | None:
    if len(transitions) != 1:
        return None
    transition = transitions[0]
    return transition if getattr(transition, "alone", False) else None  # type: ignore[return-value]


@dataclass
class _Segment:
    job_name: str | None
    step_index: int | None
    # The writes, joined once at flush time: appending to one string copied the whole
    # buffer on every write (a MiB batch built from 64 KiB reads was copied 8 times over).
    pieces: list[str]

    @property
    def text(self) -> str:
        if len(self.pieces) > 1:
            self.pieces = ["".join(self.pieces)]
        return self.pieces[0] if self.pieces else ""


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode(errors="replace"))


@dataclass
class _Buffer:
    segments: list[_Segment] = field(default_factory=list)
    size: int = 0  # characters buffered
    storing: int = 0  # characters taken by the flush in progress (counted against the caps)
    offsets: dict[str, int] = field(default_factory=dict)  # job -> runner source offset
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failures: int = 0  # consecutive transient failures
    retry_at: float = 0.0  # monotonic time before which the flush loop leaves it alone
    dropped: int = 0  # characters dropped past MAX_BUFFER_BYTES, noted once stored again
    transitions: list[Transition] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.segments or self.offsets or self.dropped or self.transitions)


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
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        self._db = db
        self._group = GroupCommit(db)
        self._metrics = metrics
        self._interval = flush_interval
        self.chunk_max_bytes = chunk_max_bytes
        self._block_seconds = block_seconds
        self._batch = max(batch_bytes, chunk_max_bytes)
        # One batch being stored and one being filled: never drop before backpressure applies.
        self._max_buffer = max(max_buffer_bytes, 2 * self._batch)
        self._buffers: dict[int, _Buffer] = defaultdict(_Buffer)
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()  # batches being stored by write()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="log-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
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
            if buf.size + buf.storing + len(text) > self._max_buffer:
                # The database has been unreachable for long: keep memory bounded.
                buf.dropped += len(text)
                self._metrics.log_store_failures.inc()
                text = ""
            else:
                last = buf.segments[-1] if buf.segments else None
                if last and (last.job_name, last.step_index) == (job_name, step_index):
                    last.pieces.append(text)
                else:
                    buf.segments.append(_Segment(job_name, step_index, [text]))
                buf.size += len(text)
        if source_offset is not None and job_name is not None and not buf.dropped:
            # After a drop the runner's offset no longer matches what is stored; keep the old one
            # so a re-attaching runner re-reads rather than skips.
            buf.offsets[job_name] = source_offset
        # A full batch is stored in the background, so the runner keeps reading meanwhile; wait
        # only when a second one is full before the first is stored (backpressure).
        if buf.size >= self._batch and not buf.lock.locked() and buf.retry_at <= time.monotonic():
            self._flush_in_background(build_id)
        deadline = time.monotonic() + self._block_seconds
        while buf.size + buf.storing >= 2 * self._batch:
            if await self.flush(build_id):
                continue
            if time.monotonic() >= deadline:
                return  # stop holding the step back; the flush loop keeps retrying
            await asyncio.sleep(self._backoff(buf))

    def _flush_in_background(self, build_id: int) -> asyncio.Task[None]:
        """A flush stop() waits for instead of cancelling: cancelled while storing, the batch
        it had taken would be lost (neither committed nor put back)."""
        task = asyncio.create_task(self._flush_logged(build_id), name=f"log-flush-{build_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _flush_logged(self, build_id: int) -> None:
        # A failure to store is handled (kept, retried) inside flush(); anything else escaping
        # a task nobody awaits would only surface at garbage collection.
        try:
            await self.flush(build_id)
        except Exception:
            log.exception("storing a log batch of build %s failed", build_id)

    def add_transition(self, build_id: int, transition: Transition) -> None:
        """Queue a status change to commit with the build's next flush, after its buffered
        output: one transaction for both, and a client that sees the change has the output
        written before it. Stored by the next flush() or at the latest one interval later."""
        self._buffers[build_id].transitions.append(transition)

    def queued(self, build_id: int, transition: Transition) -> bool:
        """Is this transition still waiting for a flush (not yet being stored)?"""
        buf = self._buffers.get(build_id)
        return buf is not None and any(t is transition for t in buf.transitions)

    def _backoff(self, buf: _Buffer) -> float:
        return float(min(MAX_BACKOFF_SECONDS, self._interval * 2 ** min(buf.failures, 16)))

    async def flush(self, build_id: int) -> bool:
        """Store what is buffered for a build. Returns False (keeping the data) when the database
        failed for a reason other than the data itself; the data is then retried later."""
        buf = self._buffers.get(build_id)
        if buf is None:
            return True
        async with buf.lock:
            if buf.empty:
                self._forget(build_id, buf)
                return True
            segments, offsets, dropped = buf.segments, buf.offsets, buf.dropped
            transitions = buf.transitions
            buf.storing, buf.size = buf.size, 0
            buf.segments, buf.offsets, buf.dropped, buf.transitions = [], {}, 0, []
            parts = self._split(segments)
            if dropped:
                last = segments[-1] if segments else _Segment(None, None, [])
                note = (
                    f"\n[ci-executor: {dropped} characters of output were dropped while the "
                    "database was unreachable]\n"
                )
                parts.append((last.job_name, last.step_index, note))
            try:
                # Nothing but a step change, and no other build's flush to share a commit
                # with (the group commit is idle): one statement through the driver.
                alone = None if parts or offsets or not self._group.idle else _alone(transitions)
                if alone is not None:
                    await alone.commit_alone(self._db)
                else:
                    await self._store(build_id, parts, offsets, transitions)
            except Exception as error:
                left: list[Part] | None = parts
                if is_data_error(error):
                    # Never retried as is: stored piece by piece (see the module doc).
                    left = await self._store_each(build_id, parts, offsets, transitions, error)
                if left is not None:
                    self._failed(build_id, buf, len(left))
                    # Put the data back in front of anything written meanwhile, in order.
                    buf.segments = [_Segment(j, s, [t]) for j, s, t in left] + buf.segments
                    buf.offsets = {**offsets, **buf.offsets}
                    buf.size = sum(len(p) for s in buf.segments for p in s.pieces)
                    buf.transitions = transitions + buf.transitions
                    return False
            finally:
                buf.storing = 0
            buf.failures, buf.retry_at = 0, 0.0
            self._metrics.log_chunks.inc(len(parts))
            self._metrics.log_bytes.inc(sum(_utf8_len(p[2]) for p in parts))
            if buf.empty:
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

    async def _store(
        self,
        build_id: int,
        parts: list[Part],
        offsets: dict[str, int],
        transitions: Sequence[Transition] = (),
    ) -> None:

        async def unit(session: AsyncSession) -> None:
            await insert_chunks(session, build_id, parts, copy=True)
            for job_name, offset in offsets.items():
                await session.exec(
                    update(BuildJob)
                    .where(col(BuildJob.build_id) == build_id)
                    .where(col(BuildJob.name) == job_name)
                    .values(log_offset=offset)
                )
            # After the chunks: their events publish first, so output precedes the status.
            for transition in transitions:
                await transition(session)

        if sum(len(part[2]) for part in parts) <= GROUP_CHARS:
            # Small (a step's start or end with little output): committed with the other
            # builds' small flushes queued at the same moment (app/db.py GroupCommit).
            await self._group.run(unit)
            return
        async with self._db.transaction() as session:
            await unit(session)

    async def _store_each(
        self,
        build_id: int,
        parts: list[Part],
        offsets: dict[str, int],
        transitions: list[Transition],
        error: Exception,
    ) -> list[Part] | None:
        """The batch was refused for its data: store its chunks one per transaction, and a chunk
        refused on its own as a note in its place. The runner offsets and status changes go with
        the last one, so a re-attaching runner never skips output that was not stored and a
        status never precedes its output. Returns the parts left (None when all were stored)
        when a transient failure interrupts: they are kept and retried like any other."""
        self._metrics.log_store_failures.inc()
        log.warning(
            "the database refused %d log chunk(s) of build %s (%s); storing them one by one",
            len(parts),
            build_id,
            type(error).__name__,
        )
        if not parts:
            parts = [(None, None, "")]  # nothing but offsets and transitions: one pass, no chunk
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            extra: tuple[dict[str, int], Sequence[Transition]] = (
                (offsets, transitions) if last else ({}, ())
            )
            chunk = [part] if part[2] else []
            try:
                try:
                    await self._store(build_id, chunk, *extra)
                except Exception as refused:
                    if not is_data_error(refused) or not chunk:
                        raise
                    job, step, text = part
                    note = (
                        f"[ci-executor: {_utf8_len(text)} bytes of output "
                        "could not be stored: the database refused them "
                        f"({type(refused).__name__})]\n"
                    )
                    await self._store(build_id, [(job, step, note)], *extra)
            except Exception:
                return [p for p in parts[i:] if p[2]]
        return None

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
            # Positions, not `text = text[n:]`: that copied the rest of the batch per chunk.
            start, size = 0, len(text)
            while start < size:
                end = min(start + limit, size)
                if not text.isascii():
                    while _utf8_len(text[start:end]) > limit:  # multi-byte characters
                        end = start + (end - start) * 3 // 4
                if end < size:
                    cut = text.rfind("\n", start, end) + 1
                    if cut > start:
                        end = cut
                parts.append((seg.job_name, seg.step_index, text[start:end]))
                start = end
        return parts

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            now = time.monotonic()
            for build_id, buf in list(self._buffers.items()):
                if buf.retry_at <= now:
                    # Shielded: stop() cancels this loop, and waits for the flush instead.
                    await asyncio.shield(self._flush_in_background(build_id))
