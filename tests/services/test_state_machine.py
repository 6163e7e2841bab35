"""The status state machine (app/services/state.py), every transition as a table.

For each status a build, job or step can be in, and each status it could be asked to move to, the
transition happens (with its timestamp and its event) when it is legal and is refused without a
write when it is not. The legal tables are written out here, from the contract, rather than read
from the module under test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from app.db import Database
from app.models import BuildStatus, JobStatus
from app.models.schemas import BuildStatusEvent
from app.services import create, state
from app.services.create import NewBuild
from tests.support.contract import LEGAL_BUILD, LEGAL_UNIT

B, J = BuildStatus, JobStatus

BUILD_FINISHED = {"success", "failed", "cancelled", "timed_out", "error"}
UNIT_FINISHED = BUILD_FINISHED | {"skipped"}


@pytest.mark.parametrize("status", list(B))
def test_build_finished(status: BuildStatus) -> None:
    assert status.finished == (status in BUILD_FINISHED)


@pytest.mark.parametrize("status", list(J))
def test_unit_finished_and_failure(status: JobStatus) -> None:
    assert status.finished == (status in UNIT_FINISHED)
    assert status.is_failure == (status in {"failed", "timed_out", "error"})


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def build_id(db: Database) -> int:
    async with db.transaction() as session:
        build = await create.create_build(
            session,
            NewBuild(
                pipeline_id="p",
                triggered_by="t",
                workflow_yaml="jobs:\n  a:\n    steps:\n      - run: x\n",
                dispatch=False,
            ),
        )
    assert build.id is not None
    return build.id


async def _reset(db: Database, table: str, status: str) -> None:
    """Put the row in `status` directly (test setup, not a transition), timestamps cleared."""
    async with db.transaction() as session:
        await session.exec(  # type: ignore[call-overload]
            text(f"UPDATE {table} SET status = :s, started_at = NULL, finished_at = NULL"),
            params={"s": status},
        )


async def _row(db: Database, table: str) -> dict[str, Any]:
    async with db.read() as session:
        result = await session.exec(  # type: ignore[call-overload]
            text(f"SELECT status, started_at, finished_at FROM {table}")
        )
        return dict(result.mappings().one())


def _check(row: dict[str, Any], to: str, moved: bool, source: str) -> list[str]:
    problems = []
    if row["status"] != (to if moved else source):
        problems.append(f"status is {row['status']}")
    if moved and to == "running" and row["started_at"] is None:
        problems.append("started_at not set")
    if moved and to in UNIT_FINISHED and row["finished_at"] is None:
        problems.append("finished_at not set")
    if not moved and (row["started_at"] or row["finished_at"]):
        problems.append("a refused transition wrote timestamps")
    return problems


async def test_every_build_transition(db: Database, build_id: int) -> None:
    mismatches = []
    for source in B:
        for to in B:
            await _reset(db, "builds", source)
            async with db.transaction() as session:
                moved = await state.build(session, build_id, to)
                events = list(session.info.get("events", []))
            expected = (source, to) in LEGAL_BUILD
            problems = _check(await _row(db, "builds"), to, moved, source)
            if moved != expected:
                problems.append(f"moved={moved}")
            if events != ([BuildStatusEvent(build_id=build_id, status=to)] if moved else []):
                problems.append(f"events {events}")
            if problems:
                mismatches.append(f"{source} -> {to}: {', '.join(problems)}")
    assert mismatches == []


@pytest.mark.parametrize("kind", ["job", "step"])
async def test_every_job_and_step_transition(db: Database, build_id: int, kind: str) -> None:
    table = "build_jobs" if kind == "job" else "build_steps"
    mismatches = []
    for source in J:
        for to in J:
            await _reset(db, table, source)
            async with db.transaction() as session:
                if kind == "job":
                    moved = await state.job(session, build_id, "a", to)
                else:
                    moved = await state.step(session, build_id, "a", 0, to)
                events = list(session.info.get("events", []))
            expected = (source, to) in LEGAL_UNIT
            problems = _check(await _row(db, table), to, moved, source)
            if moved != expected:
                problems.append(f"moved={moved}")
            if len(events) != int(moved) or (events and events[0].status != to):
                problems.append(f"events {events}")
            if problems:
                mismatches.append(f"{source} -> {to}: {', '.join(problems)}")
    assert mismatches == []


async def test_only_from_narrows_the_legal_sources(db: Database, build_id: int) -> None:
    await _reset(db, "builds", "running")
    async with db.transaction() as session:
        assert not await state.build(session, build_id, B.cancelled, only_from=[B.queued])
    await _reset(db, "builds", "queued")
    async with db.transaction() as session:
        assert await state.build(session, build_id, B.cancelled, only_from=[B.queued])
    assert (await _row(db, "builds"))["status"] == "cancelled"
