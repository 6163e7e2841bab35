"""Build state changes and reads: submit, cancel, retry, detail (the create itself:
services/create.py; the list: services/listing.py).

The functions taking a session flush; the caller's unit of work commits. The three taking the
Database (`submit`, `retry`, `cancel`) are whole units of work for the routes: they commit in one
transaction and only then publish (queue message, in-process cancel signal).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import Callable

from sqlalchemy import Table, bindparam, update
from sqlalchemy import select as core_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.actions.fetch import ActionFetcher
from app.actions.support import remote_uses, resolve_actions
from app.db import Database, GroupCommit, record_event
from app.errors import Conflict, Invalid, NotFound
from app.logs import store
from app.logs.masking import masked_variables
from app.models import (
    Build,
    BuildDetail,
    BuildFacets,
    BuildJob,
    BuildJobEdge,
    BuildSnapshot,
    BuildStatus,
    JobPublic,
    JobStatus,
    StepPublic,
)
from app.models.types import utcnow
from app.queue.base import BuildQueue
from app.secrets import retry_secrets
from app.services import results, state
from app.services.create import NewBuild, Written, create_build, create_written, parse_or_422
from app.services.dag import (
    BUILDS,
    JOB_FIELDS,
    SNAPSHOTS,
)
from app.services.handoff import SpecCache
from app.services.notify import CancelRequested
from app.services.state import JOBS, STEPS
from app.workflow import WorkflowSpec

log = logging.getLogger(__name__)


async def find_idempotent(session: AsyncSession, pipeline_id: str, key: str) -> Build | None:
    result = await session.exec(
        select(Build).where(Build.pipeline_id == pipeline_id, Build.idempotency_key == key)
    )
    return result.first()


def is_idempotency_race(exc: IntegrityError) -> bool:
    return "idempotency_key" in str(exc.orig)


async def get_build(session: AsyncSession, build_id: int) -> Build:
    build = await session.get(Build, build_id)
    if build is None:
        raise NotFound(f"build {build_id} not found")
    return build


# The detail's reads, built once with the build's id bound at execution (`:b`): building an
# ORM select cost about as much as running it, and the detail is read on every page refresh.
# They select table columns, so the rows come back as mappings, not ORM objects: loading
# those (identity map, instance state) cost a third of the read's CPU, and nothing here changes
# them. The snapshot's sha comes with the build, in one statement.
_EDGES_T: Table = SQLModel.metadata.tables[BuildJobEdge.__tablename__]
_BUILD = (
    core_select(*BUILDS.c, SNAPSHOTS.c.yaml_sha256)
    .outerjoin(SNAPSHOTS, SNAPSHOTS.c.build_id == BUILDS.c.id)
    .where(BUILDS.c.id == bindparam("b"))
)
_JOBS = core_select(*JOBS.c).where(JOBS.c.build_id == bindparam("b")).order_by(JOBS.c.index)
_STEPS = (
    core_select(*STEPS.c)
    .where(STEPS.c.build_id == bindparam("b"))
    .order_by(STEPS.c.job_name, STEPS.c.index)
)
_EDGES = (
    core_select(*_EDGES_T.c).where(_EDGES_T.c.build_id == bindparam("b")).order_by(_EDGES_T.c.id)
)


async def detail(session: AsyncSession, build_id: int) -> BuildDetail:
    by_build = {"b": build_id}
    conn = await session.connection()  # Core statements: no ORM execution around them
    build = (await conn.execute(_BUILD, by_build)).mappings().one_or_none()
    if build is None:
        raise NotFound(f"build {build_id} not found")
    job_rows = (await conn.execute(_JOBS, by_build)).mappings().all()
    step_rows = (await conn.execute(_STEPS, by_build)).mappings().all()
    edge_rows = (await conn.execute(_EDGES, by_build)).mappings().all()
    extra = await results.for_detail(session, build_id)
    step_outputs: dict[tuple[str, int], dict[str, str]] = {}
    for output in extra["outputs"]:
        key = (output["job_name"], output["step_index"])
        step_outputs.setdefault(key, {})[output["name"]] = output["value"]
    summaries = {(s["job_name"], s["step_index"]): s["content"] for s in extra["summaries"]}
    steps_by_job: dict[str, list[StepPublic]] = {}
    for step in step_rows:
        key = (step["job_name"], step["index"])
        public_step = StepPublic.model_validate(
            {**step, "outputs": step_outputs.get(key, {}), "summary": summaries.get(key)}
        )
        steps_by_job.setdefault(step["job_name"], []).append(public_step)
    needs: dict[str, list[str]] = {}
    for edge in edge_rows:
        needs.setdefault(edge["to_job"], []).append(edge["from_job"])
    jobs = [
        JobPublic.model_validate(
            {
                **{k: row[k] for k in JOB_FIELDS},
                "outputs": step_outputs.get((row["name"], results.JOB_OUTPUT), {}),
                "needs": needs.get(row["name"], []),
                "steps": steps_by_job.get(row["name"], []),
            }
        )
        for row in job_rows
    ]
    return BuildDetail.model_validate(
        {
            **build,
            "variables": masked_variables(build["variables"]),
            "annotations": [dict(a) for a in extra["annotations"]],
            "jobs": jobs,
            "edges": [dict(e) for e in edge_rows],
        }
    )


async def request_cancel(session: AsyncSession, build_id: int, by: str | None = None) -> Build:
    """Cancel a build: a queued one at once; a running one is flagged for its executor, which
    stops the work and records `cancelled` (any replica sees the flag). `by` is the caller's
    token name, kept for the UI."""
    build = await get_build(session, build_id)
    if BuildStatus(build.status).finished:
        raise Conflict(f"build {build_id} is already {build.status}")
    now = utcnow()
    if await state.build(
        session,
        build_id,
        BuildStatus.cancelled,
        only_from=[BuildStatus.queued],
        extra={"cancel_requested_at": now, "cancelled_by": by},
    ):
        await state.jobs(session, build_id, JobStatus.cancelled)
        await state.steps(session, build_id, JobStatus.skipped)
    else:
        await session.exec(
            update(Build)
            .where(col(Build.id) == build_id, col(Build.cancel_requested_at).is_(None))
            .values(cancel_requested_at=now, cancelled_by=by)
        )
        record_event(session, CancelRequested(build_id))
    await session.flush()
    await session.refresh(build)
    return build


async def retry_source(session: AsyncSession, build_id: int) -> tuple[Build, str]:
    build = await get_build(session, build_id)
    if not BuildStatus(build.status).finished:
        raise Conflict(f"build {build_id} is still {build.status}; cancel it or wait for it")
    yaml_text = (
        await session.exec(
            select(BuildSnapshot.workflow_yaml).where(BuildSnapshot.build_id == build_id)
        )
    ).one()
    return build, yaml_text


async def snapshot(session: AsyncSession, build_id: int) -> BuildSnapshot:
    await get_build(session, build_id)
    return (
        await session.exec(select(BuildSnapshot).where(BuildSnapshot.build_id == build_id))
    ).one()


async def list_facets(session: AsyncSession, *, recent: int = 1000) -> BuildFacets:
    """The pipelines, branches and actors of the most recent builds: the choices the build
    list offers as filters. Bounded by `recent` so the query stays cheap on a million builds."""
    latest = (
        select(Build.pipeline_id, Build.branch, Build.triggered_by)
        .order_by(col(Build.id).desc())
        .limit(recent)
    )
    rows = (await session.exec(latest)).all()
    return BuildFacets(
        pipelines=sorted({r[0] for r in rows}),
        branches=sorted({r[1] for r in rows if r[1]}),
        actors=sorted({r[2] for r in rows}),
    )


# A job that ended like this is what "Re-run failed jobs" runs again (GitHub re-runs failed and
# cancelled jobs alike).
_RERUN = frozenset({JobStatus.failed, JobStatus.cancelled, JobStatus.timed_out, JobStatus.error})


async def rerun_selection(
    session: AsyncSession, build_id: int, *, failed_only: bool, jobs: list[str] | None
) -> set[str]:
    """The jobs a partial re-run runs again: the failed ones (or the named ones) and every job
    that needs them, directly or not. The rest keep their results. 422 for an unknown job name,
    409 when nothing failed."""
    rows = (
        await session.exec(
            select(BuildJob.name, BuildJob.status).where(BuildJob.build_id == build_id)
        )
    ).all()
    statuses = {name: JobStatus(status) for name, status in rows}
    if jobs is not None:
        unknown = [n for n in jobs if n not in statuses]
        if unknown:
            raise Invalid(f"build {build_id} has no job named {', '.join(map(repr, unknown))}")
        chosen = set(jobs)
    else:
        chosen = {n for n, s in statuses.items() if s in _RERUN}
        if failed_only and not chosen:
            raise Conflict(f"build {build_id} has no failed or cancelled jobs to re-run")
    edges = (
        await session.exec(
            select(BuildJobEdge.from_job, BuildJobEdge.to_job).where(
                BuildJobEdge.build_id == build_id
            )
        )
    ).all()
    dependents: dict[str, list[str]] = {}
    for src, dst in edges:
        dependents.setdefault(src, []).append(dst)
    todo = list(chosen)
    while todo:
        for nxt in dependents.get(todo.pop(), []):
            if nxt not in chosen:
                chosen.add(nxt)
                todo.append(nxt)
    return chosen


async def reuse_jobs(session: AsyncSession, new_id: int, source_id: int, rerun: set[str]) -> None:
    """Copy the results and the log of every job of `source_id` that is not re-run into the
    new build `new_id` (created in this transaction): job and step rows through
    state.reuse_results, and the jobs' log chunks renumbered 1..n in their original order so
    the new build's seq stays gap-free and the live log continues after them."""
    names = (await session.exec(select(BuildJob.name).where(BuildJob.build_id == new_id))).all()
    copied = await state.reuse_results(
        session, new_id, source_id, [n for n in names if n not in rerun]
    )
    if not copied:
        return
    count = await store.copy_jobs(session, new_id, source_id, copied)
    await session.exec(update(Build).where(col(Build.id) == new_id).values(last_log_seq=count))


# ------------------------------------------------------------------ units of work for the routes


async def dispatch(queue: BuildQueue, build_id: int) -> None:
    """Publish a committed build's id. A failed publish is not the caller's error: the build
    stays queued with its dispatched_at stamp and the scheduler's requeue sweep publishes again."""
    try:
        await queue.publish(build_id)
    except Exception:
        log.warning(
            "publishing build %s failed; the requeue sweep will retry", build_id, exc_info=True
        )


async def _read_detail(db: Database, build_id: int) -> BuildDetail:
    async with db.read() as session:
        return await detail(session, build_id)


async def _idempotent_detail(
    db: Database, pipeline_id: str, key: str, request_sha256: str | None = None
) -> BuildDetail | None:
    async with db.read() as session:
        existing = await find_idempotent(session, pipeline_id, key)
        if existing is None or existing.id is None:
            return None
        if (
            request_sha256 is not None
            and existing.request_sha256 is not None
            and existing.request_sha256 != request_sha256
        ):
            # As Stripe does: a key names one request; reusing it for another is a client bug
            # that silently returning the first build would hide.
            raise Invalid(
                f"Idempotency-Key '{key}' was already used with a different request body "
                f"(build {existing.id}); use a new key for a new request"
            )
        return await detail(session, existing.id)


async def submit(
    db: Database,
    queue: BuildQueue,
    new: NewBuild,
    *,
    actions: ActionFetcher | None = None,
    specs: SpecCache | None = None,
    creates: GroupCommit | None = None,
) -> tuple[BuildDetail, bool]:
    """Create a build, commit it, then publish its id (unless `new.dispatch` is false).
    `actions`: makes the fetcher that pins the workflow's remote actions first (made only for
    a workflow that has some) (422 for one that cannot be
    used, 503 when the git server fails). `specs`: this replica's parsed workflows (a YAML
    parsed recently is not parsed again; the executor that claims the build here takes it).
    `creates`: the replica's group commit for creates (see _store); None: a transaction each.

    With an idempotency key already used for the pipeline, the first build is returned instead,
    also when a concurrent request with the same key wins the insert race (the unique index
    decides). Returns the build's detail and whether it was created here."""
    key = new.idempotency_key
    if key:
        existing = await _idempotent_detail(db, new.pipeline_id, key, new.request_sha256)
        if existing is not None:
            return existing, False
    sha = hashlib.sha256(new.workflow_yaml.encode()).hexdigest()
    spec = specs.get(sha) if specs is not None else None
    if spec is None:
        # Parsed off the event loop and before the transaction: no lock is held while it runs.
        spec = await asyncio.to_thread(parse_or_422, new.workflow_yaml)
        if specs is not None:
            specs.remember(sha, spec)
    if actions is not None and new.actions is None:
        # No remote action: the pins resolve_actions would return, without a call.
        pins = await resolve_actions(spec, actions) if remote_uses(spec) else {}
        new = dataclasses.replace(new, actions=pins)
    try:
        written = await _store(db, creates, new, spec)
    except IntegrityError as exc:
        if not (key and is_idempotency_race(exc)):
            raise
        existing = await _idempotent_detail(db, new.pipeline_id, key, new.request_sha256)
        assert existing is not None  # the winner committed before our insert failed
        return existing, False
    if new.dispatch:
        if specs is not None:
            specs.note(written.id, sha, new.actions)  # before the publish: claimable at once
        await dispatch(queue, written.id)
    # Answered from what was written: a build that started meanwhile shows `queued` here, as
    # it was when created; GET /builds/{id} has its progress.
    return written, True


async def _store(
    db: Database, creates: GroupCommit | None, new: NewBuild, spec: WorkflowSpec
) -> BuildDetail:
    """The create's transaction. Through `creates`, creates that arrive while one commits share
    the next transaction: a burst of POSTs takes the write lock (SQLite) or the pipeline's
    counter row (Postgres) a few times instead of once each, and each time for a transaction
    whose statements follow one another, where 50 separate creates queued one behind the other,
    each holding the lock across its own loop turns. A create failing in a shared transaction
    (a refused row, an idempotency race) makes every create of it run again alone."""
    made: list[Written] = []

    async def unit(session: AsyncSession) -> None:
        made[:] = [await create_written(session, new, spec)]  # a rerun alone replaces it

    if creates is None:
        async with db.transaction() as session:
            await unit(session)
    else:
        await creates.run(unit)
    detail = made[0].detail
    assert detail is not None  # written before the commit that let us here
    return detail


async def retry(
    db: Database,
    queue: BuildQueue,
    build_id: int,
    *,
    triggered_by: str | None,
    failed_only: bool = False,
    jobs: list[str] | None = None,
) -> BuildDetail:
    """A new build from a finished build's snapshot, variables, commit, branch and repo, with
    `retry_of` set; committed, then published. `triggered_by` None keeps the original's.
    With `failed_only` or `jobs`, only those jobs and what needs them run again; the others'
    results and logs are copied (reuse_jobs)."""
    async with db.transaction() as session:
        source, yaml_text = await retry_source(session, build_id)
        pins = (await snapshot(session, build_id)).actions
        rerun: set[str] | None = None
        if failed_only or jobs is not None:
            rerun = await rerun_selection(session, build_id, failed_only=failed_only, jobs=jobs)
        new = await create_build(
            session,
            NewBuild(
                pipeline_id=source.pipeline_id,
                triggered_by=triggered_by or source.triggered_by,
                workflow_yaml=yaml_text,
                commit_sha=source.commit_sha,
                branch=source.branch,
                repo_url=source.repo_url,
                variables=source.variables,
                retry_of=build_id,
                event_name=source.event_name,
                event=source.event,
                secrets_sealed=retry_secrets(source),
                actions=pins,  # the same commits as the first run
            ),
        )
        new_id = new.id
        assert new_id is not None
        if rerun is not None:
            await reuse_jobs(session, new_id, build_id, rerun)
    await dispatch(queue, new_id)
    return await _read_detail(db, new_id)


async def cancel(
    db: Database, build_id: int, *, signal: Callable[[int], object], by: str | None = None
) -> BuildDetail:
    """Record the cancel request (and who made it), then `signal` this replica's executor
    (other replicas see the flag or the NOTIFY)."""
    async with db.transaction() as session:
        await request_cancel(session, build_id, by=by)
    signal(build_id)
    return await _read_detail(db, build_id)
