"""Per-pipeline build numbers: allocated by an upsert of the pipeline's counter row, whose lock
serialises the pipeline's creates until they commit (so concurrent creates never share a
number, and none is skipped: a create that fails rolls its number back)."""

from __future__ import annotations

import secrets

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models import PipelineCounter
from app.services.state import BUILDS


async def next_number(session: AsyncSession, pipeline_id: str) -> int:
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(PipelineCounter)
    stmt = (
        ins.values(pipeline_id=pipeline_id, last_number=1)
        .on_conflict_do_update(
            index_elements=["pipeline_id"],
            set_={"last_number": col(PipelineCounter.last_number) + 1},
        )
        .returning(col(PipelineCounter.last_number))
    )
    return int((await session.exec(stmt)).scalar_one())


def placeholder_number() -> int:
    """A build's number until number_last sets it in the same transaction: negative (never a
    real number) and random, so concurrent creates' rows do not meet on the unique index (if
    two did, the second would wait for the first's commit, which has replaced it by then)."""
    return -1 - secrets.randbits(31)


async def number_last(session: AsyncSession, build_id: int, pipeline_id: str) -> int:
    """Postgres: the pipeline's next number, set on the build, as the transaction's last
    statement. The counter's row lock serialises a pipeline's creates until they commit;
    taken last, it is held for this statement and the commit only, not for the whole create
    (50 POSTs to one pipeline at once otherwise queued one create at a time)."""
    counter = (
        postgresql.insert(PipelineCounter)
        .values(pipeline_id=pipeline_id, last_number=1)
        .on_conflict_do_update(
            index_elements=["pipeline_id"],
            set_={"last_number": col(PipelineCounter.last_number) + 1},
        )
        .returning(col(PipelineCounter.last_number))
        .cte("n")
    )
    result = await session.exec(
        update(BUILDS)
        .where(BUILDS.c.id == build_id)
        .values(number=select(counter.c.last_number).scalar_subquery())
        .returning(BUILDS.c.number)
    )
    return int(result.scalar_one())
