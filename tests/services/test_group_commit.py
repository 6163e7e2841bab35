"""GroupCommit (app/db.py): units queued while a group transaction waits or runs are committed
together in the next one; a unit that fails inside a shared transaction fails alone, the others
commit; events are published once their transaction committed. The log writer's small flushes
(a step's start) go through it: several builds' step starts at once take one transaction."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import GroupCommit, record_event
from app.models import Build
from tests.services.test_dispatch_path import ONE_STEP, write_transactions
from tests.support import create


def _rename(build_id: int, value: str) -> Any:
    async def unit(session: AsyncSession) -> None:
        await session.exec(update(Build).where(col(Build.id) == build_id).values(branch=value))
        record_event(session, ("renamed", build_id))

    return unit


def _updates(transaction: list[str]) -> int:
    return sum(s.startswith("UPDATE BUILDS SET") for s in transaction)


async def _branches(app: Any, ids: list[int]) -> list[str | None]:
    async with app.state.services.db.read() as session:
        rows = (await session.exec(select(Build).where(col(Build.id).in_(ids)))).all()
    by_id = {row.id: row.branch for row in rows}
    return [by_id[i] for i in ids]


async def test_units_queued_together_commit_in_one_transaction(
    app: Any, client: httpx.AsyncClient
) -> None:
    db = app.state.services.db
    ids = [(await create(client, ONE_STEP, dispatch=False))["id"] for _ in range(3)]
    published: list[list[Any]] = []
    db.sinks.append(published.append)
    group = GroupCommit(db)
    with write_transactions(app) as transactions:
        await asyncio.gather(*(group.run(_rename(i, f"b{i}")) for i in ids))
    db.sinks.remove(published.append)
    # (the app's own sweeps may write meanwhile: their transactions are not these)
    assert [_updates(t) for t in transactions if _updates(t) > 1] == [3], transactions
    assert await _branches(app, ids) == [f"b{i}" for i in ids]
    # The three units' events, published once, after the one commit.
    assert [e for batch in published for e in batch if isinstance(e, tuple)] == [
        ("renamed", i) for i in ids
    ]


async def test_a_failing_unit_fails_alone(app: Any, client: httpx.AsyncClient) -> None:
    db = app.state.services.db
    ids = [(await create(client, ONE_STEP, dispatch=False))["id"] for _ in range(2)]

    async def broken(session: AsyncSession) -> None:
        await session.exec(update(Build).where(col(Build.id) == ids[0]).values(branch="lost"))
        raise ValueError("refused")

    group = GroupCommit(db)
    results = await asyncio.gather(
        group.run(_rename(ids[0], "kept")),
        group.run(broken),
        group.run(_rename(ids[1], "kept too")),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None, results
    assert isinstance(results[1], ValueError)
    # The broken unit's write rolled back with it; the others committed.
    assert await _branches(app, ids) == ["kept", "kept too"]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_concurrent_builds": 8}


async def test_step_starts_of_builds_at_once_share_a_transaction(
    app: Any, client: httpx.AsyncClient
) -> None:
    """Four builds' first steps starting together: their step starts (the log writer's small
    flushes) take fewer transactions than one each."""
    writer = app.state.services.writer
    started = []
    builds = [(await create(client, ONE_STEP, dispatch=False))["id"] for _ in range(4)]
    with write_transactions(app) as transactions:
        # Queued as four reporters' step_started would, before the group's transaction runs.
        for build_id in builds:
            writer.add_transition(build_id, _rename(build_id, "started"))
        started = await asyncio.gather(*(writer.flush(b) for b in builds))
    assert started == [True] * 4
    assert [_updates(t) for t in transactions if _updates(t) > 1] == [4], transactions
    assert await _branches(app, builds) == ["started"] * 4
