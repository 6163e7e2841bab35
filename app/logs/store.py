"""Log chunk storage and reads: the one module that touches `build_log_chunks`.

Writes: a batch allocates a contiguous seq range with one atomic UPDATE of builds.last_log_seq
and inserts its chunks in the same transaction, so seq has no gaps and a crash between the two
can never leave one without the other. On Postgres the rows go in with the COPY protocol (asyncpg
`copy_records_to_table`) inside that transaction; the unique (build_id, seq) constraint holds
for COPY as for INSERT, so the guarantees are the same on both databases. The content column
is compressed with lz4 on Postgres where the server has it (migration log_chunks_lz4): with
pglz, compressing each 64 KiB chunk was most of the database's share of storing a fast log.

Content is made storable first, the same way on both databases: Postgres `text` cannot hold a NUL
character, so NUL becomes U+2400 (SYMBOL FOR NUL, "␀"), and a lone surrogate (possible in a JSON
append) becomes U+FFFD. Invalid UTF-8 from a step is already U+FFFD (app/logs/masking.py).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import Table, func, insert, literal, update
from sqlalchemy import select as sa_select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from app.db import Database, record_event
from app.logs.hub import LogEvent
from app.models import Build, BuildLogChunk, LogChunkPublic
from app.models.types import utcnow

NUL_REPLACEMENT = "\u2400"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
CHUNKS: Table = SQLModel.metadata.tables[BuildLogChunk.__tablename__]
_COPY_COLUMNS = ("build_id", "seq", "job_name", "step_index", "content", "created_at")

Part = tuple[str | None, int | None, str]  # job_name, step_index, content


def storable(text: str) -> str:
    """The text with what a database `text` column refuses replaced visibly (see module doc)."""
    if text.isascii():
        return text.replace("\x00", NUL_REPLACEMENT) if "\x00" in text else text
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(lambda m: NUL_REPLACEMENT if m.group() == "\x00" else "\ufffd", text)


async def _allocate(session: AsyncSession, build_id: int, count: int) -> int:
    """Reserve `count` seqs for a build; returns the first. The row lock serialises writers."""
    result = await session.exec(
        update(Build)
        .where(col(Build.id) == build_id)
        .values(last_log_seq=col(Build.last_log_seq) + count)
        .returning(col(Build.last_log_seq))
    )
    return int(result.scalar_one()) - count + 1


async def _copy(conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
    """COPY rows into build_log_chunks on the session's own connection (same transaction)."""
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection  # asyncpg.Connection
    await driver.copy_records_to_table(
        CHUNKS.name, records=rows, columns=_COPY_COLUMNS, timeout=None
    )


async def insert_chunks(
    session: AsyncSession, build_id: int, parts: Sequence[Part], *, copy: bool = False
) -> list[LogChunkPublic]:
    """Allocate seqs and store chunks in the caller's transaction; events publish on commit.

    `copy=True` uses COPY on Postgres (the writer's batches); it is ignored on SQLite."""
    if not parts:
        return []
    first = await _allocate(session, build_id, len(parts))
    now = utcnow()
    chunks = [
        LogChunkPublic(
            seq=first + i,
            job_name=job,
            step_index=step,
            content=storable(text),
            created_at=now,
        )
        for i, (job, step, text) in enumerate(parts)
    ]
    conn = await session.connection()
    if copy and conn.dialect.name == "postgresql":
        await _copy(
            conn,
            [(build_id, c.seq, c.job_name, c.step_index, c.content, now) for c in chunks],
        )
    else:
        await session.exec(
            CHUNKS.insert(),
            params=[{"build_id": build_id, **c.model_dump()} for c in chunks],
        )
    for chunk in chunks:
        record_event(session, LogEvent(build_id, chunk))
    return chunks


async def replace_content(session: AsyncSession, chunk: BuildLogChunk, content: str) -> None:
    """Rewrite a stored chunk's content (an append masking a secret that began in it)."""
    chunk.content = content
    await session.exec(
        update(BuildLogChunk).where(col(BuildLogChunk.id) == chunk.id).values(content=content)
    )


async def copy_jobs(session: AsyncSession, new_id: int, source_id: int, jobs: Sequence[str]) -> int:
    """Copy the chunks of `jobs` from one build to a new one, renumbered 1..n in their order
    (the new build's seq stays gap-free). Returns n, the new build's last seq."""
    numbered = sa_select(
        literal(new_id).label("build_id"),
        func.row_number().over(order_by=CHUNKS.c.seq).label("seq"),
        CHUNKS.c.job_name,
        CHUNKS.c.step_index,
        CHUNKS.c.content,
        CHUNKS.c.created_at,
    ).where(CHUNKS.c.build_id == source_id, CHUNKS.c.job_name.in_(jobs))
    await session.exec(insert(CHUNKS).from_select(list(_COPY_COLUMNS), numbered))
    count = (
        await session.exec(
            select(func.count()).select_from(CHUNKS).where(CHUNKS.c.build_id == new_id)
        )
    ).one()
    return int(count)


async def chunk_at(session: AsyncSession, build_id: int, seq: int) -> BuildLogChunk | None:
    return (
        await session.exec(
            select(BuildLogChunk).where(
                BuildLogChunk.build_id == build_id, BuildLogChunk.seq == seq
            )
        )
    ).first()


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


async def chunks_page(
    session: AsyncSession,
    build_id: int,
    *,
    offset: int,
    limit: int,
    max_bytes: int,
    job: str | None,
    step: int | None,
) -> tuple[list[LogChunkPublic], bool]:
    """Up to `limit` chunks after `offset`, stopping before their content passes `max_bytes`
    (always at least one chunk, so a page makes progress). The sizes are read first and the
    contents only of the chunks that fit, so a page never holds more than about max_bytes.
    Returns the chunks and whether the byte bound cut the page short."""
    sizes_query = select(BuildLogChunk.seq, func.length(BuildLogChunk.content).label("n")).where(
        BuildLogChunk.build_id == build_id, BuildLogChunk.seq > offset
    )
    if job is not None:
        sizes_query = sizes_query.where(BuildLogChunk.job_name == job)
    if step is not None:
        sizes_query = sizes_query.where(BuildLogChunk.step_index == step)
    sizes = (await session.exec(sizes_query.order_by(col(BuildLogChunk.seq)).limit(limit))).all()
    if not sizes:
        return [], False
    # length() counts characters; a character is at most 4 UTF-8 bytes, but escaped in JSON a
    # control character takes 6 (\u0000-style): count 6 per character, the worst case.
    total, last_seq, cut = 0, sizes[0][0], False
    for seq, n in sizes:
        total += 6 * int(n or 0)
        if total > max_bytes and seq != sizes[0][0]:
            cut = True
            break
        last_seq = seq
    rows = (
        await session.exec(
            _chunk_query(build_id, offset, job, step).where(BuildLogChunk.seq <= last_seq)
        )
    ).all()
    return [LogChunkPublic.model_validate(r) for r in rows], cut


async def chunks_after(
    session: AsyncSession, build_id: int, after: int, *, limit: int = 500
) -> list[LogChunkPublic]:
    rows = (await session.exec(_chunk_query(build_id, after, None, None).limit(limit))).all()
    return [LogChunkPublic.model_validate(r) for r in rows]


async def raw_text(
    db: Database, build_id: int, *, job: str | None, step: int | None, batch: int = 200
) -> AsyncIterator[str]:
    """The whole log as text, read in batches so a 100 MB log never sits in memory."""
    offset = 0
    while True:
        query = select(BuildLogChunk.seq, BuildLogChunk.content).where(
            BuildLogChunk.build_id == build_id, BuildLogChunk.seq > offset
        )
        if job is not None:
            query = query.where(BuildLogChunk.job_name == job)
        if step is not None:
            query = query.where(BuildLogChunk.step_index == step)
        async with db.read() as session:
            rows = (await session.exec(query.order_by(col(BuildLogChunk.seq)).limit(batch))).all()
        if not rows:
            return
        for _seq, content in rows:
            yield content
        offset = rows[-1][0]
