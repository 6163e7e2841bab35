"""Per-pipeline build numbers: allocated by an upsert of the pipeline's counter row, whose lock
serialises the pipeline's creates until they commit (so concurrent creates never share a
number, and none is skipped: a create that fails rolls its number back)."""

from __future__ import annotations

import secrets
from functools import cache
from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models import PipelineCounter
from app.services.state import BUILDS

COUNTERS: Table = SQLModel.metadata.tables[PipelineCounter.__tablename__]


# The statements are built once, their values bound at execution: building one (an upsert with
# RETURNING) cost more of a create's CPU than running it.
@cache
def _increment(dialect: str) -> Any:
    """The pipeline's counter (`:p`) advanced by `:k`, or created at `:k`; returns the new
    value (the last of the `:k` numbers taken)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(COUNTERS)
        .values(pipeline_id=bindparam("p"), last_number=bindparam("k"))
        .on_conflict_do_update(
            index_elements=["pipeline_id"],
            set_={"last_number": COUNTERS.c.last_number + bindparam("k")},
        )
        .returning(COUNTERS.c.last_number)
    )


@cache
def _number_last() -> Any:
    counter = _increment("postgresql").cte("n")
    return (
        update(BUILDS)
        .where(BUILDS.c.id == bindparam("b"))
        .values(number=select(counter.c.last_number).scalar_subquery())
        .returning(BUILDS.c.number)
    )


async def next_number(session: AsyncSession, pipeline_id: str) -> int:
    return await take_numbers(session, pipeline_id, 1)


async def take_numbers(session: AsyncSession, pipeline_id: str, count: int) -> int:
    """`count` consecutive numbers of the pipeline; returns the last (the first is
    last - count + 1)."""
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    result = await session.exec(_increment(dialect), params={"p": pipeline_id, "k": count})
    return int(result.scalar_one())


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
    params = {"b": build_id, "p": pipeline_id, "k": 1}
    result = await session.exec(_number_last(), params=params)
    return int(result.scalar_one())
