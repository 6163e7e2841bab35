"""The one place statuses change.

Every transition is a single conditional UPDATE (`... WHERE status IN (legal sources)`), so two
writers racing (a cancel and a step finishing, two replicas claiming) cannot both win, and a
repeated report (a runner re-attaching) is a no-op. Each transition that happened records a
StatusEvent that is published after commit. Entering `running` sets started_at; entering a
final status sets finished_at.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Table, Update, bindparam, tuple_, update
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import Database, DriverStatement, record_event
from app.models import Build, BuildJob, BuildStatus, BuildStep, JobStatus
from app.models.schemas import BuildStatusEvent, JobStatusEvent, StepStatusEvent
from app.models.types import UTCDateTime, utcnow

B, J = BuildStatus, JobStatus
# Core tables rather than ORM entities: these statements run several times per step, and Core
# updates skip the ORM's per-statement session synchronisation (nothing here is loaded anyway).
BUILDS: Table = SQLModel.metadata.tables[Build.__tablename__]
JOBS: Table = SQLModel.metadata.tables[BuildJob.__tablename__]
STEPS: Table = SQLModel.metadata.tables[BuildStep.__tablename__]

BUILD_TRANSITIONS: dict[BuildStatus, frozenset[BuildStatus]] = {
    B.queued: frozenset({B.running, B.cancelled, B.error}),
    B.running: frozenset({B.success, B.failed, B.cancelled, B.timed_out, B.error}),
}
UNIT_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    J.pending: frozenset({J.running, J.skipped, J.cancelled, J.error}),
    J.running: frozenset({J.success, J.failed, J.cancelled, J.timed_out, J.error}),
}


def _sources(table: dict[Any, frozenset[Any]], to: Any) -> list[str]:
    return [str(source) for source, targets in table.items() if to in targets]


def _timestamps(to: BuildStatus | JobStatus, now: datetime) -> dict[str, Any]:
    if to == "running":
        return {"started_at": now}
    if to.finished:
        return {"finished_at": now}
    return {}


async def build(
    session: AsyncSession,
    build_id: int,
    to: BuildStatus,
    *,
    error: str | None = None,
    extra: dict[str, Any] | None = None,
    only_from: Iterable[BuildStatus] | None = None,
) -> bool:
    """Move a build to `to` if legal (and, with only_from, only from those statuses)."""
    sources = _sources(BUILD_TRANSITIONS, to)
    if only_from is not None:
        sources = [s for s in sources if s in {str(x) for x in only_from}]
    values: dict[str, Any] = {"status": str(to), **_timestamps(to, utcnow()), **(extra or {})}
    if error is not None:
        values["error"] = error
    if to.finished:
        values["lease_owner"] = None
        values["lease_expires_at"] = None
    stmt = _build_update(tuple(sources), tuple(values))
    result = await session.exec(stmt, params={"id_": build_id, **values})
    if result.first() is None:
        return False
    record_event(session, BuildStatusEvent(build_id=build_id, status=to, error=error))
    return True


# The shapes of build() and jobs(), built once each (constructing an UPDATE cost more CPU than
# running it): the legal sources and the columns set are the shape, every value is bound at
# execution under its column's name (the ids under names no column has).
def _bound(table: Table, columns: tuple[str, ...]) -> dict[str, Any]:
    """SET values for `columns`, each bound at execution under its column's name and type."""
    return {name: bindparam(name, type_=table.c[name].type) for name in columns}


@cache
def _build_update(sources: tuple[str, ...], columns: tuple[str, ...]) -> Update:
    return (
        update(BUILDS)
        .where(BUILDS.c.id == bindparam("id_"), BUILDS.c.status.in_(sources))
        .values(_bound(BUILDS, columns))
        .returning(BUILDS.c.id)
    )


@cache
def _jobs_update(sources: tuple[str, ...], columns: tuple[str, ...], by_name: bool) -> Update:
    stmt = update(JOBS).where(JOBS.c.build_id == bindparam("b_"), JOBS.c.status.in_(sources))
    if by_name:
        stmt = stmt.where(JOBS.c.name.in_(bindparam("names_", expanding=True)))
    return stmt.values(_bound(JOBS, columns)).returning(JOBS.c.name)


async def claim_ungrouped(
    session: AsyncSession, build_id: int, extra: dict[str, Any]
) -> Build | None:
    """queued -> running for a build without a concurrency group: a claim in one statement,
    the build as updated read from its RETURNING (no SELECT first), loaded in the session.
    None when the build has a group (the caller then checks it) or is not queued."""
    to = B.running
    stmt = (
        update(Build)
        .where(
            col(Build.id) == build_id,
            col(Build.status).in_(_sources(BUILD_TRANSITIONS, to)),
            col(Build.concurrency_key).is_(None),
        )
        .values(status=str(to), **{**_timestamps(to, utcnow()), **extra})
        .returning(Build)
        .execution_options(synchronize_session=False)
    )
    claimed: Build | None = (await session.exec(stmt)).scalars().first()
    if claimed is not None:
        record_event(session, BuildStatusEvent(build_id=build_id, status=to))
    return claimed


async def claim_ungrouped_many(
    session: AsyncSession, build_ids: list[int], extra: dict[str, Any]
) -> list[Build]:
    """claim_ungrouped for several builds in one statement (a group commit of claims): the
    builds that moved, as updated; the others have a group or are not queued."""
    to = B.running
    values = {"status": str(to), **_timestamps(to, utcnow()), **extra}
    stmt = _claim_many(tuple(values))
    result = await session.exec(stmt, params={"ids_": build_ids, **values})
    claimed: list[Build] = list(result.scalars().all())
    for build_ in claimed:
        assert build_.id is not None
        record_event(session, BuildStatusEvent(build_id=build_.id, status=to))
    return claimed


@cache
def _claim_many(columns: tuple[str, ...]) -> Any:
    # Built once per shape: with 50 ids the literal IN list alone (a bound parameter built
    # per id) cost more than the rest of a burst's claim transaction.
    return (
        update(Build)
        .where(
            col(Build.id).in_(bindparam("ids_", expanding=True)),
            col(Build.status).in_(_sources(BUILD_TRANSITIONS, B.running)),
            col(Build.concurrency_key).is_(None),
        )
        .values(_bound(BUILDS, columns))
        .returning(Build)
        .execution_options(synchronize_session=False)
    )


async def start_jobs(session: AsyncSession, wanted: list[tuple[int, str]]) -> set[tuple[int, str]]:
    """pending -> running for (build id, job name) pairs of several builds in one statement;
    the pairs that moved."""
    if not wanted:
        return set()
    to = J.running
    result = await session.exec(_start_jobs(), params={"wanted_": wanted, "ts_": utcnow()})
    moved = {(int(row[0]), str(row[1])) for row in result.all()}
    for build_id, name in sorted(moved, key=wanted.index):
        record_event(session, JobStatusEvent(build_id=build_id, job_name=name, status=to))
    return moved


@cache
def _start_jobs() -> Update:
    return (
        update(JOBS)
        .where(
            tuple_(JOBS.c.build_id, JOBS.c.name).in_(bindparam("wanted_", expanding=True)),
            JOBS.c.status.in_(_sources(UNIT_TRANSITIONS, J.running)),
        )
        .values(status=str(J.running), started_at=bindparam("ts_", type_=UTCDateTime()))
        .returning(JOBS.c.build_id, JOBS.c.name)
    )


async def jobs(
    session: AsyncSession,
    build_id: int,
    to: JobStatus,
    *,
    names: Iterable[str] | None = None,
    error: str | None = None,
) -> list[str]:
    """Move the named jobs (all of the build's when None) to `to` where legal; returns the names
    that moved."""
    values: dict[str, Any] = {"status": str(to), **_timestamps(to, utcnow())}
    if error is not None:
        values["error"] = error
    stmt = _jobs_update(tuple(_sources(UNIT_TRANSITIONS, to)), tuple(values), names is not None)
    params = {"b_": build_id, **values}
    if names is not None:
        params["names_"] = list(names)
    result = await session.exec(stmt, params=params)
    moved = [row[0] for row in result.all()]
    for name in moved:
        record_event(
            session,
            JobStatusEvent(build_id=build_id, job_name=name, status=to, error=error),
        )
    return moved


async def job(
    session: AsyncSession, build_id: int, name: str, to: JobStatus, *, error: str | None = None
) -> bool:
    return bool(await jobs(session, build_id, to, names=[name], error=error))


async def steps(
    session: AsyncSession,
    build_id: int,
    to: JobStatus,
    *,
    job_name: str | None = None,
    index: int | None = None,
    exit_code: int | None = None,
) -> list[tuple[str, int]]:
    """Move steps (one, a job's, or the build's) to `to` where legal."""
    params: dict[str, Any] = {"b": build_id, "j": job_name, "i": index, "x": exit_code}
    params["ts"] = utcnow()
    stmt = _step_update(to, job_name is not None, index is not None, exit_code is not None)
    result = await session.exec(stmt, params=params)
    moved = [(row[0], row[1]) for row in result.all()]
    for moved_job, moved_index in moved:
        record_event(
            session,
            StepStatusEvent(
                build_id=build_id,
                job_name=moved_job,
                step_index=moved_index,
                status=to,
                exit_code=exit_code,
            ),
        )
    return moved


@cache
def _step_update(to: JobStatus, by_job: bool, by_index: bool, with_code: bool) -> Update:
    """Step transitions run twice per step: build each statement shape once, with bound
    parameters, instead of constructing (and compiling) it every time."""
    values: dict[str, Any] = {"status": str(to)}
    if to == "running":
        values["started_at"] = bindparam("ts", type_=UTCDateTime())
    elif to.finished:
        values["finished_at"] = bindparam("ts", type_=UTCDateTime())
    if with_code:
        values["exit_code"] = bindparam("x")
    stmt = update(STEPS).where(
        STEPS.c.build_id == bindparam("b"),
        STEPS.c.status.in_(_sources(UNIT_TRANSITIONS, to)),
    )
    if by_job:
        stmt = stmt.where(STEPS.c.job_name == bindparam("j"))
    if by_index:
        stmt = stmt.where(STEPS.c["index"] == bindparam("i"))
    return stmt.values(**values).returning(STEPS.c.job_name, STEPS.c["index"])


async def step(
    session: AsyncSession,
    build_id: int,
    job_name: str,
    index: int,
    to: JobStatus,
    *,
    exit_code: int | None = None,
) -> bool:
    return bool(
        await steps(session, build_id, to, job_name=job_name, index=index, exit_code=exit_code)
    )


@dataclass
class StepChange:
    """A job's step transitions that commit together, as one conditional UPDATE: step `end`
    moving to `to` and step `start` to running (either may be absent). A runner's steps follow
    each other, so a step's end and the next one's start are one statement instead of two; the
    rules are the ones every transition here follows (legal sources, timestamps, events)."""

    build_id: int
    job_name: str
    end: int | None = None
    to: JobStatus | None = None
    exit_code: int | None = None
    start: int | None = None

    def statement(self) -> DriverStatement:
        return _change_statement(self.to)

    def params(self) -> dict[str, Any]:
        return {
            "b": self.build_id,
            "j": self.job_name,
            "e": self.end,
            "s": self.start,
            "x": self.exit_code,
            "ts": utcnow(),
        }

    def events(self, rows: list[Any]) -> list[StepStatusEvent]:
        """The transitions that happened, from the statement's rows (each row: its index)."""
        moved = {row[0] for row in rows}
        events = []
        if self.end is not None and self.to is not None and self.end in moved:
            events.append(self._event(self.end, self.to, self.exit_code))
        if self.start is not None and self.start in moved:
            events.append(self._event(self.start, J.running, None))
        return events

    def _event(self, index: int, to: JobStatus, exit_code: int | None) -> StepStatusEvent:
        return StepStatusEvent(
            build_id=self.build_id,
            job_name=self.job_name,
            step_index=index,
            status=to,
            exit_code=exit_code,
        )


async def change_steps(session: AsyncSession, change: StepChange) -> list[StepStatusEvent]:
    """A StepChange inside the caller's transaction."""
    conn = await session.connection()
    rows = (await conn.execute(change.statement().clause, change.params())).all()
    events = change.events(list(rows))
    for event in events:
        record_event(session, event)
    return events


async def change_steps_alone(db: Database, change: StepChange) -> list[StepStatusEvent]:
    """A StepChange as a transaction of its own, through the driver (Database.commit_alone)."""
    events: list[StepStatusEvent] = []

    def moved(rows: list[Any]) -> list[StepStatusEvent]:
        events.extend(change.events(rows))
        return events

    await db.commit_alone(change.statement(), change.params(), moved)
    return events


def _quoted(statuses: Iterable[str]) -> str:
    return ", ".join(f"'{s}'" for s in statuses)


@cache
def _change_statement(to: JobStatus | None) -> DriverStatement:
    """StepChange's UPDATE: with `to` None only a start (`:s`); else an end (`:e`, NULL when
    absent) and a start (`:s`, NULL when absent) in one statement, each row guarded by its
    own legal sources."""
    types = {"ts": UTCDateTime()}
    starts = _quoted(_sources(UNIT_TRANSITIONS, J.running))
    where = "build_id = :b AND job_name = :j"
    if to is None:
        return DriverStatement(
            f"UPDATE build_steps SET status = 'running', started_at = :ts WHERE {where} "
            f'AND "index" = :s AND status IN ({starts}) RETURNING "index"',
            types,
        )
    assert to.finished
    ends = _quoted(_sources(UNIT_TRANSITIONS, to))
    ending = '"index" = :e'
    return DriverStatement(
        "UPDATE build_steps SET "
        f"status = CASE WHEN {ending} THEN '{to}' ELSE 'running' END, "
        f"started_at = CASE WHEN {ending} THEN started_at ELSE :ts END, "
        f"finished_at = CASE WHEN {ending} THEN :ts ELSE finished_at END, "
        f"exit_code = CASE WHEN {ending} THEN :x ELSE exit_code END "
        f"WHERE {where} AND (({ending} AND status IN ({ends})) "
        f'OR ("index" = :s AND status IN ({starts}))) RETURNING "index"',
        types,
    )


async def reuse_results(
    session: AsyncSession, build_id: int, source_id: int, names: Iterable[str]
) -> list[str]:
    """A partial re-run: give the still-`pending` jobs `names` of a new build the finished
    results (status, timestamps, error, exit codes) of the same jobs in `source_id`, marked
    with `reused_from`. Not a transition a runner makes: the copy happens in the transaction
    that creates the build, before anyone can see or run it. Returns the names copied."""
    wanted = list(names)
    if not wanted:
        return []
    src_jobs = (
        await session.exec(
            select(BuildJob).where(BuildJob.build_id == source_id, col(BuildJob.name).in_(wanted))
        )
    ).all()
    done = [j for j in src_jobs if JobStatus(j.status).finished]
    if not done:
        return []
    await session.exec(
        update(JOBS)
        .where(
            JOBS.c.build_id == build_id,
            JOBS.c.name == bindparam("n"),
            JOBS.c.status == str(J.pending),
        )
        .values(
            status=bindparam("s"),
            started_at=bindparam("st", type_=UTCDateTime()),
            finished_at=bindparam("ft", type_=UTCDateTime()),
            error=bindparam("e"),
            reused_from=source_id,
        ),
        params=[
            {"n": j.name, "s": j.status, "st": j.started_at, "ft": j.finished_at, "e": j.error}
            for j in done
        ],
    )
    copied = [j.name for j in done]
    src_steps = (
        await session.exec(
            select(BuildStep).where(
                BuildStep.build_id == source_id, col(BuildStep.job_name).in_(copied)
            )
        )
    ).all()
    if src_steps:
        await session.exec(
            update(STEPS)
            .where(
                STEPS.c.build_id == build_id,
                STEPS.c.job_name == bindparam("n"),
                STEPS.c["index"] == bindparam("i"),
            )
            .values(
                status=bindparam("s"),
                started_at=bindparam("st", type_=UTCDateTime()),
                finished_at=bindparam("ft", type_=UTCDateTime()),
                exit_code=bindparam("x"),
            ),
            params=[
                {
                    "n": st.job_name,
                    "i": st.index,
                    "s": st.status,
                    "st": st.started_at,
                    "ft": st.finished_at,
                    "x": st.exit_code,
                }
                for st in src_steps
            ],
        )
    return copied
