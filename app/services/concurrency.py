"""`concurrency:` groups, as GitHub Actions defines them, per pipeline, decided by the database.

Within one pipeline, at most one build or job of a group runs and at most one waits:
- a build or job that finds its group held waits (a build stays `queued`, a job `pending`, with
  `waiting_reason` saying why); whoever starts waiting replaces (cancels) the one waiting
  before it, with GitHub's message "Canceling since a higher priority waiting request for 'g'
  exists";
- with `cancel-in-progress` true, a new build (when created) or job (when its needs have
  finished) also asks the holder to stop; it starts once the holder has ended;
- workflow-level and job-level groups share one namespace, as on GitHub; a job whose group is
  the one its own build holds can never start, and is cancelled, as GitHub does.

Group names compare case-insensitively. Every decision about a pipeline's groups runs under the
pipeline's row in `pipeline_counters` (`SELECT ... FOR UPDATE` on Postgres; on SQLite every write
transaction already holds the database's write lock), so replicas never both take a group; the
unique partial index `uq_builds_running_concurrency_key` backs the rule for builds.

Waking: a transaction that frees a group or changes its waiters records a `GroupChanged` event;
after the commit the scheduler publishes the waiting build (any replica may claim it) and wakes
its executors that have waiting jobs. Executors with waiting jobs also look again every second
(their group may be freed on another replica), and the requeue sweep republishes a waiting build
whose wake-up was lost.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import Database, record_event
from app.errors import Invalid
from app.models import Build, BuildJob, BuildStatus, JobStatus, PipelineCounter
from app.models.types import utcnow
from app.services import state
from app.services.notify import CancelRequested
from app.workflow import WorkflowSpec
from app.workflow.expressions import ExpressionError, evaluate_template, interpolate
from app.workflow.spec import Concurrency

KEY_MAX = 255
POLL_SECONDS = 1.0  # how often an executor with waiting jobs looks again (other replicas)


def replaced_message(group: str) -> str:
    return f"Canceling since a higher priority waiting request for '{group}' exists"


def deadlock_message(group: str, job: str) -> str:
    return (
        f"Canceling since a deadlock for concurrency group '{group}' was detected between "
        f"'top level workflow' and '{job}'"
    )


@dataclass(frozen=True)
class Group:
    name: str
    cancel_in_progress: bool = False

    @property
    def key(self) -> str:
        """Case-folded (GitHub: `prod` and `Prod` are one group); a long name is hashed so
        the key fits its column without two names sharing a prefix colliding."""
        folded = self.name.casefold()
        if len(folded) <= KEY_MAX:
            return folded
        return f"{folded[:180]}...sha256:{hashlib.sha256(folded.encode()).hexdigest()}"


@dataclass(frozen=True)
class GroupChanged:
    """Recorded in a transaction that freed a group or replaced its waiter (see module doc)."""

    build_id: int
    pipeline_id: str
    key: str


def evaluate(concurrency: Concurrency | None, contexts: dict[str, Any]) -> Group | None:
    """The group and cancel-in-progress as the contexts give them (raises ExpressionError).
    An empty group (an expression that yields '') means no group."""
    if concurrency is None:
        return None
    name = interpolate(concurrency.group, contexts).strip()
    cancel: Any = concurrency.cancel_in_progress
    if isinstance(cancel, str):
        cancel = evaluate_template(cancel, contexts)
        if isinstance(cancel, str):
            cancel = cancel.strip().lower() == "true"
    return Group(name, bool(cancel)) if name else None


def workflow_contexts(build: Build, spec: WorkflowSpec) -> dict[str, Any]:
    """What a workflow-level group may use: `github`, `inputs`, `vars`."""
    from app.services.plan import job_contexts  # plan imports the runners: only when needed

    contexts = job_contexts(build, spec, spec.jobs[0], {})
    contexts["github"]["job"] = ""
    return {name: contexts[name] for name in ("github", "inputs", "vars")}


async def lock_pipeline(session: AsyncSession, pipeline_id: str) -> None:
    """Serialise group decisions of one pipeline (see module doc)."""
    bind = session.bind
    if bind is not None and bind.dialect.name == "postgresql":
        await session.exec(
            select(PipelineCounter.last_number)
            .where(PipelineCounter.pipeline_id == pipeline_id)
            .with_for_update()
        )


# ------------------------------------------------------------------------------- builds


async def on_create(session: AsyncSession, build: Build, spec: WorkflowSpec) -> None:
    """A new build (flushed, holding the pipeline lock through its number): record its group,
    replace the group's waiter and, with cancel-in-progress, ask the holders to stop.
    An expression that cannot be evaluated is a 422 and nothing is stored."""
    assert build.id is not None
    if spec.concurrency is None:
        return
    try:
        group = evaluate(spec.concurrency, workflow_contexts(build, spec))
    except ExpressionError as exc:
        raise Invalid(f"the workflow's `concurrency` cannot be evaluated: {exc}") from exc
    if group is None:
        return
    build.concurrency_group, build.concurrency_key = group.name, group.key
    session.add(build)
    await lock_pipeline(session, build.pipeline_id)
    await replace_waiters(session, build.pipeline_id, group, build_id=build.id)
    if group.cancel_in_progress:
        await cancel_holders(session, build.pipeline_id, group, build_id=build.id)


async def may_start(session: AsyncSession, build_id: int) -> bool:
    """Inside the claim's transaction: whether a queued build may start now. When its group is
    held it waits (`waiting_reason`), replacing the group's previous waiter."""
    build = await session.get(Build, build_id)
    if build is None or build.concurrency_key is None or build.status != BuildStatus.queued:
        return True  # the claim's conditional update decides
    group = Group(build.concurrency_group or build.concurrency_key)
    await lock_pipeline(session, build.pipeline_id)
    held_by = await holder(session, build.pipeline_id, group.key, build_id=build_id)
    if held_by is None:
        return True
    if build.waiting_reason is None:
        await replace_waiters(session, build.pipeline_id, group, build_id=build_id)
    await session.exec(
        update(Build)
        .where(col(Build.id) == build_id)
        .values(waiting_reason=f"waiting for concurrency group '{group.name}': {held_by}")
    )
    return False


async def queued(session: AsyncSession, pipeline_id: str, key: str) -> list[int]:
    """The group's queued builds, which the scheduler publishes when the group frees. All of
    them, not only the one marked waiting: a build refused while the holder was finishing may
    not be marked yet when this is read, but it was queued since its creation."""
    rows = await session.exec(
        select(Build.id)
        .where(
            Build.pipeline_id == pipeline_id,
            Build.concurrency_key == key,
            Build.status == BuildStatus.queued,
        )
        .order_by(col(Build.id))
        .limit(100)
    )
    return [i for i in rows.all() if i is not None]


# ---------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class JobDecision:
    started: bool  # moved to running (holding its group)
    gone: bool = False  # no longer pending: cancelled (replaced, deadlock) meanwhile


async def enter_job(
    session: AsyncSession, build: Build, job_name: str, group: Group, *, first: bool
) -> JobDecision:
    """Start a pending job in its group, or let it wait. `first`: the job's first attempt
    (it then replaces the group's waiter and, with cancel-in-progress, stops the holder)."""
    assert build.id is not None
    pipeline = build.pipeline_id
    await lock_pipeline(session, pipeline)
    where = (col(BuildJob.build_id) == build.id, col(BuildJob.name) == job_name)
    values: dict[str, Any] = {"concurrency_group": group.name, "concurrency_key": group.key}
    if build.concurrency_key == group.key:
        await session.exec(update(BuildJob).where(*where).values(**values))
        message = deadlock_message(group.name, job_name)
        await state.job(session, build.id, job_name, JobStatus.cancelled, error=message)
        await state.steps(session, build.id, JobStatus.skipped, job_name=job_name)
        return JobDecision(started=False, gone=True)
    held_by = await holder(session, pipeline, group.key, build_id=build.id, job_name=job_name)
    if held_by is None:
        await session.exec(update(BuildJob).where(*where).values(**values, waiting_reason=None))
        moved = await state.job(session, build.id, job_name, JobStatus.running)
        return JobDecision(started=moved, gone=not moved)
    if first:
        await replace_waiters(session, pipeline, group, build_id=build.id, job_name=job_name)
        if group.cancel_in_progress:
            await cancel_holders(session, pipeline, group, build_id=build.id, job_name=job_name)
    reason = f"waiting for concurrency group '{group.name}': {held_by}"
    result = await session.exec(
        update(BuildJob)
        .where(*where, col(BuildJob.status) == JobStatus.pending)
        .values(**values, waiting_reason=reason)
        .returning(col(BuildJob.id))
    )
    return JobDecision(started=False, gone=result.first() is None)


async def stop_flagged(db: Database, build_id: int, running: dict[str, asyncio.Event]) -> None:
    """Set the cancel event of each of a build's running jobs (name -> event) that another
    build's cancel-in-progress asked to stop."""
    if not running:
        return
    async with db.read() as session:
        rows = await session.exec(
            select(BuildJob.name).where(
                BuildJob.build_id == build_id,
                col(BuildJob.name).in_(list(running)),
                col(BuildJob.cancel_requested_at).is_not(None),
            )
        )
        flagged = rows.all()
    for name in flagged:
        running[name].set()


# ------------------------------------------------------------------------- shared rules


async def holder(
    session: AsyncSession,
    pipeline_id: str,
    key: str,
    *,
    build_id: int,
    job_name: str | None = None,
) -> str | None:
    """Who holds the group (a running build, or a running job), described for people; None
    when free. The asking build (or job) itself is left out."""
    running_build = (
        await session.exec(
            select(Build.number).where(
                Build.pipeline_id == pipeline_id,
                Build.concurrency_key == key,
                Build.status == BuildStatus.running,
                col(Build.id) != build_id,
            )
        )
    ).first()
    if running_build is not None:
        return f"build #{running_build} is running"
    query = (
        select(Build.number, BuildJob.name)
        .join(Build, col(Build.id) == col(BuildJob.build_id))
        .where(
            Build.pipeline_id == pipeline_id,
            BuildJob.concurrency_key == key,
            BuildJob.status == JobStatus.running,
        )
    )
    if job_name is not None:
        query = query.where((col(BuildJob.build_id) != build_id) | (BuildJob.name != job_name))
    running_job = (await session.exec(query)).first()
    if running_job is not None:
        return f"job '{running_job[1]}' of build #{running_job[0]} is running"
    return None


async def replace_waiters(
    session: AsyncSession,
    pipeline_id: str,
    group: Group,
    *,
    build_id: int,
    job_name: str | None = None,
) -> None:
    """Cancel whatever waits for the group (a newer request takes its place)."""
    message = replaced_message(group.name)
    builds = (
        await session.exec(
            select(Build.id).where(
                Build.pipeline_id == pipeline_id,
                Build.concurrency_key == group.key,
                Build.status == BuildStatus.queued,
                col(Build.waiting_reason).is_not(None),
                col(Build.id) != build_id,
            )
        )
    ).all()
    for waiting in builds:
        assert waiting is not None
        if await state.build(
            session,
            waiting,
            BuildStatus.cancelled,
            only_from=[BuildStatus.queued],
            error=message,
            extra={"cancel_requested_at": utcnow()},
        ):
            await state.jobs(session, waiting, JobStatus.cancelled)
            await state.steps(session, waiting, JobStatus.skipped)
    jobs = (
        await session.exec(
            select(BuildJob.build_id, BuildJob.name)
            .join(Build, col(Build.id) == col(BuildJob.build_id))
            .where(
                Build.pipeline_id == pipeline_id,
                BuildJob.concurrency_key == group.key,
                BuildJob.status == JobStatus.pending,
                col(BuildJob.waiting_reason).is_not(None),
            )
        )
    ).all()
    for waiting_build, name in jobs:
        if waiting_build == build_id and name == job_name:
            continue
        if await state.job(session, waiting_build, name, JobStatus.cancelled, error=message):
            await state.steps(session, waiting_build, JobStatus.skipped, job_name=name)
            # Its executor (here or on another replica) learns it from the database.
            record_event(session, GroupChanged(waiting_build, pipeline_id, group.key))


async def cancel_holders(
    session: AsyncSession,
    pipeline_id: str,
    group: Group,
    *,
    build_id: int,
    job_name: str | None = None,
) -> None:
    """cancel-in-progress: ask the running build or job of the group to stop. A build is
    cancelled as by the API (its executor stops it, on whichever replica); a job is flagged for
    its build's executor."""
    now, message = utcnow(), replaced_message(group.name)
    running = await session.exec(
        update(Build)
        .where(
            col(Build.pipeline_id) == pipeline_id,
            col(Build.concurrency_key) == group.key,
            col(Build.status) == BuildStatus.running,
            col(Build.id) != build_id,
            col(Build.cancel_requested_at).is_(None),
        )
        .values(cancel_requested_at=now, error=message)
        .returning(col(Build.id))
    )
    for cancelled in running.scalars().all():
        record_event(session, CancelRequested(cancelled))
    jobs = (
        await session.exec(
            select(BuildJob.id, BuildJob.build_id, BuildJob.name)
            .join(Build, col(Build.id) == col(BuildJob.build_id))
            .where(
                Build.pipeline_id == pipeline_id,
                BuildJob.concurrency_key == group.key,
                BuildJob.status == JobStatus.running,
                col(BuildJob.cancel_requested_at).is_(None),
            )
        )
    ).all()
    for row_id, holder_build, name in jobs:
        if holder_build == build_id and name == job_name:
            continue
        await session.exec(
            update(BuildJob)
            .where(col(BuildJob.id) == row_id)
            .values(cancel_requested_at=now, error=message)
        )
        record_event(session, GroupChanged(holder_build, pipeline_id, group.key))
