"""The per-step write path: a step's end and the next step's start are one conditional UPDATE
(state.StepChange), held to the same legal transitions as every other; with nothing else to
store it commits alone, through the driver (Database.commit_alone: one trip to aiosqlite's
thread on SQLite, one statement on Postgres); a build of N steps makes one such write per step."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text

from app.db import Database
from app.models import JobStatus
from app.services import state
from app.services.create import NewBuild, create_build
from tests.support import create, pids_with, wait_for_build, wait_until
from tests.support.contract import LEGAL_UNIT as LEGAL

J = JobStatus
ENDS = [J.success, J.failed, J.cancelled, J.timed_out, J.error, J.skipped]


def steps_yaml(count: int) -> str:
    return "jobs:\n  a:\n    steps:\n" + "      - run: 'true'\n" * count


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


async def _two_steps(db: Database) -> int:
    async with db.transaction() as session:
        build = await create_build(
            session,
            NewBuild(
                pipeline_id="p", triggered_by="t", workflow_yaml=steps_yaml(2), dispatch=False
            ),
        )
    assert build.id is not None
    return build.id


async def _set(db: Database, build_id: int, first: str, second: str) -> None:
    """Put both steps in a status directly (test setup, not a transition)."""
    async with db.transaction() as session:
        for index, status in ((0, first), (1, second)):
            await session.exec(  # type: ignore[call-overload]
                text(
                    "UPDATE build_steps SET status = :s, started_at = NULL, finished_at = NULL, "
                    'exit_code = NULL WHERE build_id = :b AND "index" = :i'
                ),
                params={"s": status, "b": build_id, "i": index},
            )


async def _rows(db: Database, build_id: int) -> list[dict[str, Any]]:
    async with db.read() as session:
        result = await session.exec(  # type: ignore[call-overload]
            text(
                "SELECT status, started_at, finished_at, exit_code FROM build_steps "
                'WHERE build_id = :b ORDER BY "index"'
            ),
            params={"b": build_id},
        )
        return [dict(row) for row in result.mappings().all()]


def _problems(row: dict[str, Any], source: str, to: str, exit_code: int | None) -> list[str]:
    moved = (source, to) in LEGAL
    problems = []
    if row["status"] != (to if moved else source):
        problems.append(f"status {row['status']}")
    if moved and to == "running" and (row["started_at"] is None or row["finished_at"]):
        problems.append("timestamps of a start")
    if moved and to != "running" and (row["finished_at"] is None or row["started_at"]):
        problems.append("timestamps of an end")
    if not moved and (row["started_at"] or row["finished_at"]):
        problems.append("a refused transition wrote timestamps")
    if row["exit_code"] != (exit_code if moved else None):
        problems.append(f"exit code {row['exit_code']}")
    return problems


@pytest.mark.parametrize("alone", [False, True], ids=["in-session", "alone"])
async def test_a_step_change_makes_exactly_the_legal_transitions(db: Database, alone: bool) -> None:
    """Every status the ended step and the started step can be in, every end status: each row
    moves when its own transition is legal, never otherwise, with its timestamps, its exit
    code (the ended step only) and its event; inside a session or committed alone."""
    build_id = await _two_steps(db)
    mismatches = []
    for source in J:
        for to in ENDS:
            for next_source in J:
                await _set(db, build_id, source, next_source)
                change = state.StepChange(build_id, "a", end=0, to=to, exit_code=3, start=1)
                if alone:
                    events = await state.change_steps_alone(db, change)
                else:
                    async with db.transaction() as session:
                        events = await state.change_steps(session, change)
                        assert session.info.get("events", []) == events
                first, second = await _rows(db, build_id)
                problems = _problems(first, source, to, 3) + _problems(
                    second, next_source, "running", None
                )
                expected = [
                    (i, str(t), x)
                    for i, s, t, x in ((0, source, to, 3), (1, next_source, J.running, None))
                    if (s, t) in LEGAL
                ]
                got = [(e.step_index, str(e.status), e.exit_code) for e in events]
                if got != expected:
                    problems.append(f"events {got}")
                if problems:
                    mismatches.append(f"{source}->{to} + {next_source}: {', '.join(problems)}")
    assert mismatches == []


async def test_an_end_or_a_start_alone(db: Database) -> None:
    build_id = await _two_steps(db)
    await _set(db, build_id, "pending", "pending")
    await state.change_steps_alone(db, state.StepChange(build_id, "a", start=0))
    assert [r["status"] for r in await _rows(db, build_id)] == ["running", "pending"]
    end = state.StepChange(build_id, "a", end=0, to=J.failed, exit_code=1)
    events = await state.change_steps_alone(db, end)
    assert [(e.step_index, e.status) for e in events] == [(0, J.failed)]
    assert [(r["status"], r["exit_code"]) for r in await _rows(db, build_id)] == [
        ("failed", 1),
        ("pending", None),
    ]
    # Repeated (a runner reporting again): nothing moves, nothing is published.
    assert await state.change_steps_alone(db, end) == []


async def test_commit_alone_is_one_trip_and_publishes_after_it(db: Database, backend: str) -> None:
    """On SQLite the statement and its BEGIN IMMEDIATE and COMMIT, nothing else; on Postgres the
    statement alone (its own transaction). The events reach the sinks once it committed."""
    build_id = await _two_steps(db)
    await _set(db, build_id, "running", "pending")
    seen: list[str] = []
    published: list[Any] = []
    db.sinks.append(published.extend)
    # One connection at a time: the pool hands the traced one back.
    async with db.engine.connect() as conn:
        driver: Any = (await conn.get_raw_connection()).driver_connection
        if backend == "sqlite":
            await driver._execute(driver._conn.set_trace_callback, seen.append)
        else:
            driver.add_query_logger(lambda record: seen.append(record.query))
    change = state.StepChange(build_id, "a", end=0, to=J.success, exit_code=0, start=1)
    events = await state.change_steps_alone(db, change)
    words = [" ".join(s.split()[:2]).upper() for s in seen]
    if backend == "sqlite":
        assert words == ["BEGIN IMMEDIATE", "UPDATE BUILD_STEPS", "COMMIT"], seen
    else:
        assert words == ["UPDATE BUILD_STEPS"], seen
    assert len(events) == 2 and published == events


async def test_one_write_per_step_with_nothing_else_to_store(
    app: Any, client: httpx.AsyncClient
) -> None:
    """Steps with no output: each step's end and the next one's start commit alone, in one
    write; no session transaction writes a step (only the job's end, which sweeps its steps)."""
    db: Database = app.state.services.db
    alone: list[str] = []
    session_writes: list[str] = []
    commit_alone = db.commit_alone

    async def counted(statement: Any, params: dict[str, Any], events: Any) -> list[Any]:
        alone.append(statement.sql)
        return await commit_alone(statement, params, events)

    def executed(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE BUILD_STEPS"):
            session_writes.append(statement)

    db.commit_alone = counted  # type: ignore[method-assign]
    event.listen(db.engine.sync_engine, "before_cursor_execute", executed)
    counts = {}
    try:
        for steps in (3, 8):
            alone.clear()
            session_writes.clear()
            detail = await wait_for_build(client, (await create(client, steps_yaml(steps)))["id"])
            assert detail["status"] == "success", detail
            counts[steps] = (len(alone), len(session_writes))
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", executed)
        db.commit_alone = commit_alone  # type: ignore[method-assign]
    # 5 more steps: 5 more writes, all alone (first start, 2 handovers, last end for 3 steps).
    assert counts[8][0] - counts[3][0] == 5, counts
    assert counts[3][0] == 3 + 1, counts
    assert counts[8][1] == counts[3][1], counts
    steps = detail["jobs"][0]["steps"]
    assert all(s["status"] == "success" and s["exit_code"] == 0 for s in steps), steps
    assert all(s["started_at"] <= s["finished_at"] for s in steps), steps


async def _step_rows(db: Database, build_id: int) -> tuple[list[str], int]:
    """The build's step statuses and how many log chunks it has stored."""
    async with db.read() as session:
        steps = await session.exec(  # type: ignore[call-overload]
            text('SELECT status FROM build_steps WHERE build_id = :b ORDER BY "index"'),
            params={"b": build_id},
        )
        chunks = await session.exec(  # type: ignore[call-overload]
            text("SELECT count(*) FROM build_log_chunks WHERE build_id = :b"),
            params={"b": build_id},
        )
        return [row[0] for row in steps.all()], chunks.scalar_one()


@pytest.mark.parametrize("settings_overrides", [{"local_isolation": "none"}])
async def test_nothing_of_a_step_is_stored_before_its_start(
    app: Any, client: httpx.AsyncClient
) -> None:
    """The local runner spawns a step while its start commits (it never re-attaches, so no
    replica reads the start back first). Held inside that commit, the step runs and its output
    reaches the log writer, yet nothing of it is stored before the start: a reader never sees a
    step's output before it saw the step running. (The runner reports the step's end only once
    its start is stored.)"""
    services = app.state.services
    db: Database = services.db
    commit_alone, write = db.commit_alone, services.writer.write
    entered, release, written = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def gated(statement: Any, params: dict[str, Any], events: Any) -> list[Any]:
        if params.get("s") == 0:
            entered.set()
            await release.wait()
        return await commit_alone(statement, params, events)

    async def watched(build_id: int, job: Any, step: Any, text: str, *rest: Any) -> None:
        await write(build_id, job, step, text, *rest)
        if "out" in text:
            written.set()

    db.commit_alone = gated  # type: ignore[method-assign]
    services.writer.write = watched
    try:
        build = await create(client, "jobs:\n  a:\n    steps:\n      - run: echo out\n")
        await wait_until(lambda: entered.is_set() and written.is_set(), "output, start held")
        # A flush now waits for the start's: the writer stores a build's batches in order.
        flushing = asyncio.ensure_future(services.writer.flush(build["id"]))
        assert await _step_rows(db, build["id"]) == (["pending"], 0)
        assert not flushing.done()
        release.set()
        assert await flushing
        detail = await wait_for_build(client, build["id"])
    finally:
        release.set()
        db.commit_alone = commit_alone  # type: ignore[method-assign]
        services.writer.write = write
    logs = (await client.get(f"/builds/{build['id']}/logs/raw")).text
    assert detail["status"] == "success", logs
    assert logs == "out\n"
    step = detail["jobs"][0]["steps"][0]
    assert step["status"] == "success" and step["started_at"] <= step["finished_at"], step


@pytest.mark.parametrize("settings_overrides", [{"local_isolation": "none"}])
async def test_a_start_that_cannot_be_stored_stops_the_step(
    app: Any, client: httpx.AsyncClient, tmp_path: Any
) -> None:
    """The database refuses a step's start (a lost connection, once) while the step already
    runs: the step is stopped instead of running on unrecorded, its job ends `error` saying
    why, and the start and end the writer kept are stored once the database answers again."""
    db: Database = app.state.services.db
    commit_alone = db.commit_alone
    refused = asyncio.Event()
    ran = tmp_path / "ran"
    sleep = f"sleep 300.{uuid.uuid4().int % 10**9}"  # this test's own, for pids_with

    async def refusing(statement: Any, params: dict[str, Any], events: Any) -> list[Any]:
        if params.get("s") == 0 and not refused.is_set():
            await wait_until(ran.exists, "the step running")
            refused.set()
            raise ConnectionResetError("connection to the database lost")
        return await commit_alone(statement, params, events)

    db.commit_alone = refusing  # type: ignore[method-assign]
    try:
        yaml = f"jobs:\n  a:\n    steps:\n      - run: touch {ran} && {sleep}\n"
        build = await create(client, yaml)
        # Without the stop, the build would outlast this wait by minutes.
        detail = await wait_for_build(client, build["id"], timeout=30)
    finally:
        db.commit_alone = commit_alone  # type: ignore[method-assign]
    assert refused.is_set()
    job = detail["jobs"][0]
    assert (detail["status"], job["status"], job["steps"][0]["status"]) == (
        "error",
        "error",
        "error",
    ), detail
    assert "could not record the start of step 0" in (job["error"] or ""), job
    assert job["steps"][0]["started_at"] is not None, job
    assert pids_with(sleep) == []
