"""Log reads and API appends."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from app.db import Database
from app.errors import Conflict
from app.logs.masking import Masker, secret_names
from app.logs.writer import insert_chunks
from app.models import BuildLogChunk, BuildStatus, LogAppend, LogChunkPublic, LogPage
from app.services.builds import get_build


async def append(
    session: AsyncSession, build_id: int, body: LogAppend
) -> tuple[LogChunkPublic, bool]:
    """AppendBuildLogs. Returns the chunk and whether it was created (False: an idempotent
    repeat). A different content at an existing seq, or a seq that would leave a gap, is 409."""
    build = await get_build(session, build_id)
    masker = Masker(build.variables[name] for name in secret_names(build.variables))
    content = masker.mask_text(body.content)
    if body.seq is not None:
        existing = (
            await session.exec(
                select(BuildLogChunk).where(
                    BuildLogChunk.build_id == build_id, BuildLogChunk.seq == body.seq
                )
            )
        ).first()
        if existing is not None:
            same = (existing.content, existing.job_name, existing.step_index) == (
                content,
                body.job_name,
                body.step_index,
            )
            if not same:
                raise Conflict(f"seq {body.seq} of build {build_id} holds different content")
            return LogChunkPublic.model_validate(existing), False
        if body.seq != build.last_log_seq + 1:
            raise Conflict(
                f"seq {body.seq} would leave a gap: the next seq of build {build_id} is "
                f"{build.last_log_seq + 1}"
            )
    [chunk] = await insert_chunks(session, build_id, [(body.job_name, body.step_index, content)])
    if body.seq is not None and chunk.seq != body.seq:
        # Someone appended concurrently; the transaction rolls back and the caller may retry.
        raise Conflict(f"seq {body.seq} of build {build_id} was taken concurrently; retry")
    return chunk, True


def _chunk_query(
    build_id: int, offset: int, job: str | None, step: int | None
) -> SelectOfScalar[BuildLogChunk]:
    query = select(BuildLogChunk).where(
        BuildLogChunk.build_id == build_id, BuildLogChunk.seq > offset
    )
    if job is not None:
        query = query.where(BuildLogChunk.job_name == job)
    if step is not None:
        query = query.where(BuildLogChunk.step_index == step)
    return query.order_by(col(BuildLogChunk.seq))


async def page(
    session: AsyncSession,
    build_id: int,
    *,
    offset: int,
    limit: int,
    job: str | None,
    step: int | None,
) -> LogPage:
    build = await get_build(session, build_id)
    finished = BuildStatus(build.status).finished
    rows = (await session.exec(_chunk_query(build_id, offset, job, step).limit(limit))).all()
    items = [LogChunkPublic.model_validate(r) for r in rows]
    next_offset = items[-1].seq if items else offset
    complete = finished and (len(items) < limit or next_offset >= build.last_log_seq)
    return LogPage(items=items, next_offset=next_offset, complete=complete)


async def chunks_after(
    db: Database, build_id: int, after: int, *, limit: int = 500
) -> list[LogChunkPublic]:
    async with db.read() as session:
        rows = (await session.exec(_chunk_query(build_id, after, None, None).limit(limit))).all()
    return [LogChunkPublic.model_validate(r) for r in rows]


async def raw(
    db: Database, build_id: int, *, job: str | None, step: int | None, batch: int = 200
) -> AsyncIterator[str]:
    """The whole log as text, read in batches so a 100 MB log never sits in memory."""
    offset = 0
    while True:
        async with db.read() as session:
            rows = (
                await session.exec(_chunk_query(build_id, offset, job, step).limit(batch))
            ).all()
        if not rows:
            return
        for row in rows:
            yield row.content
        offset = rows[-1].seq
