"""Runs one build: walks its DAG, hands ready jobs to the runner, records what happens.

The executor is the only writer of a running build's job and step statuses (through
app/services/state.py). A cancel request only sets `cancel_requested_at` and signals the executor,
which stops the runner's work and records the outcome, so there is one writer per running build.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.actions.support import load_actions
from app.db import record_event
from app.logs.masking import secret_names
from app.models import Build, BuildJob, BuildSnapshot, BuildStatus, JobStatus
from app.runners.base import JobResult, JobRun
from app.secrets import build_secrets
from app.services import concurrency, results, state
from app.services.handoff import Noted, SpecCache, parsed_spec
from app.services.plan import (
    BuildActions,
    JobSetupError,
    job_contexts,
    job_run,
    planned_steps,
    post_uses,
)
from app.services.reporting import BuildContext, BuildReporter
from app.workflow import JobSpec, WorkflowSpec, graph, parse_workflow
from app.workflow.expressions import ExpressionError, interpolate
from app.workflow.matrix import combination_name
from app.workflow.parser import MAX_JOBS
from app.workflow.strategy import MatrixError, expand_template

log = logging.getLogger(__name__)
J = JobStatus
# `needs.<job>.result` as GitHub names it, and which wins when combinations differ.
_RESULTS = {J.success: "success", J.skipped: "skipped", J.cancelled: "cancelled"}
_RANK = {"success": 0, "skipped": 1, "cancelled": 2, "failure": 3}
# The scheduler's claim inside the executor's first transaction: the build as claimed, or None.
Claim = Callable[[AsyncSession], Awaitable[Build | None]]
Pins = dict[str, Any] | None
Rows = Sequence[BuildJob] | None


async def _snapshot(session: AsyncSession, build_id: int) -> BuildSnapshot | None:
    return (
        await session.exec(select(BuildSnapshot).where(BuildSnapshot.build_id == build_id))
    ).first()


async def _job_rows(session: AsyncSession, build_id: int) -> Sequence[BuildJob]:
    return (await session.exec(select(BuildJob).where(BuildJob.build_id == build_id))).all()


class BuildExecutor:
    """Runs one build. Its state lives here for the life of the run: the parsed spec, each job's
    status, the tasks following running jobs, and the graph facts computed once."""

    def __init__(self, ctx: BuildContext, specs: SpecCache | None = None) -> None:
        self.ctx = ctx
        self._job_cancels: dict[str, asyncio.Event] = {}
        self._keys: dict[str, str] = {}
        self._build: Build | None = None
        self._spec: WorkflowSpec | None = None
        self._secrets: frozenset[str] = frozenset()
        self._secret_map: dict[str, str] = {}  # the decrypted `secrets` map of the build
        self._jobs: dict[str, JobSpec] = {}
        self._needs: dict[str, tuple[str, ...]] = {}
        self._ancestors: dict[str, frozenset[str]] = {}
        self._statuses: dict[str, JobStatus] = {}
        self._tasks: dict[str, asyncio.Task[JobResult]] = {}
        self._outputs: dict[str, dict[str, str]] = {}  # job name -> its `outputs:` values
        self._tolerated: set[str] = set()  # failed jobs with `continue-on-error` true
        self._actions = BuildActions()
        self._waiting: set[str] = set()  # pending jobs waiting for their concurrency group
        self._groups: dict[str, concurrency.Group] = {}  # jobs that hold a concurrency group
        self._specs = specs
        self._pins: dict[str, Any] = {}  # the snapshot's pinned actions

    def _condition_contexts(self, job: JobSpec) -> dict[str, Any]:
        assert self._build is not None
        assert self._spec is not None
        contexts = job_contexts(
            self._build, self._spec, job, self._needs_context(job), self._secret_map
        )
        contexts["env"] = dict(self._spec.env)
        return contexts

    async def claim(self, claim: Claim, noted: Noted | None = None) -> bool:
        """Claim the build and start its first ready jobs in one transaction: the dispatch
        path's only write before its first step's. `claim` is the scheduler's conditional
        update inside it (None: not claimable, nothing written); what needs more (a
        concurrency group, a matrix, a spec not at hand...) is left to `run`. `noted`: what
        this replica's create noted, when the caller already took it (app/services/claims.py)."""
        ctx = self.ctx
        if noted is None and self._specs is not None:
            noted = self._specs.take(ctx.build_id)
        snapshot, spec = None, noted.spec if noted is not None else None
        if noted is None:  # created elsewhere: read and parse first, outside the transaction
            async with ctx.db.read() as session:
                snapshot = await _snapshot(session, ctx.build_id)
            spec = await parsed_spec(self._specs, snapshot)
        async with ctx.db.transaction() as session:
            build = await claim(session)
            if build is None or spec is None:
                return build is not None
            rows: Sequence[BuildJob] | None = None  # claimed from queued: as the create wrote
            if snapshot is not None:
                rows = await _job_rows(session, ctx.build_id)
                if any(row.status != J.pending for row in rows):  # a re-run's reused jobs
                    self._outputs = await results.job_outputs(session, ctx.build_id)
            pins = noted.actions if noted is not None else snapshot.actions if snapshot else None
            for name in self.claimed(build, pins, rows, spec):
                if await state.job(session, ctx.build_id, name, J.running):
                    self._statuses[name] = J.running
        return True

    def started(self, names: list[str]) -> None:
        """The claim's transaction moved these jobs to running; `run` follows them."""
        self._statuses.update(dict.fromkeys(names, J.running))

    def claimed(self, build: Build, pins: Pins, rows: Rows, spec: WorkflowSpec) -> list[str]:
        """Load the build as claimed (no I/O); the first jobs to start in the claim's
        transaction. None when the load fails (run loads again) or remote actions are to be
        fetched (that may fail: no job runs before)."""
        try:
            self._load(build, pins, rows, spec)
        except Exception:
            log.debug("build %s: loading at claim failed; run loads again", self.ctx.build_id)
            self._build = None
            return []
        return [] if pins else self._first_ready()

    async def run(self, *, resume: bool = False) -> None:
        ctx = self.ctx
        if self._build is None and not await self._read_and_load():
            return
        assert self._build is not None
        pins = self._pins
        fetched = await load_actions(ctx.actions.fetcher, pins) if ctx.actions and pins else {}
        self._actions = BuildActions(pins, fetched, ctx.actions)
        for job in list(self._jobs.values()):
            if job.matrix_template is not None and job.name not in self._statuses:
                # Expanded by an earlier executor: expand again (deterministic: same needs
                # outputs) to know the combinations' specs; the rows are already stored.
                with contextlib.suppress(MatrixError):
                    self._replace(job, self._combinations(job))
        for name, status in self._statuses.items():
            if status == J.running:
                self._start(self._jobs[name], reattach=resume)
        try:
            await self._walk()
        except asyncio.CancelledError:
            # The scheduler detaches (shutdown with a re-attachable runner): stop following the
            # jobs without recording anything, so the next owner picks them up as they are.
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            raise
        if not ctx.detach:
            await self._finish()

    async def _read_and_load(self) -> bool:
        """Read the build's state in one session and load it (a take-over, or a claim that
        could not load). False when the build is gone."""
        ctx = self.ctx
        async with ctx.db.read() as session:
            build = await session.get(Build, ctx.build_id)
            snapshot = await _snapshot(session, ctx.build_id)
            rows = await _job_rows(session, ctx.build_id)
            self._outputs = await results.job_outputs(session, ctx.build_id)
        if build is None or snapshot is None:
            log.error("build %s vanished before it ran", ctx.build_id)
            return False
        spec = self._specs.get(snapshot.yaml_sha256) if self._specs is not None else None
        # Off the event loop: a big workflow must not stall every other build and request.
        if spec is None:
            spec = await asyncio.to_thread(parse_workflow, snapshot.workflow_yaml)
        self._load(build, snapshot.actions, rows, spec)
        return True

    def _load(self, build: Build, pins: Pins, rows: Rows, spec: WorkflowSpec) -> None:
        """The build's state, as read, into this executor (no I/O). `rows` None: every job of
        the spec pending, as a create this replica made wrote them."""
        ctx = self.ctx
        if build.cancel_requested_at is not None:
            ctx.cancel.set()
        # Secret-named variables are stored as *** with their values sealed: put them back.
        sealed = build_secrets(ctx.secret_box, build)
        if sealed.variables:
            build.variables = {**build.variables, **sealed.variables}
        for value in sealed.secrets.values():
            ctx.masker.add(value)
        self._secret_map = sealed.secrets
        self._build = build
        self._spec = spec
        self._pins = pins or {}
        self._secrets = secret_names(build.variables)
        for name in self._secrets:
            ctx.masker.add(build.variables[name])
        if rows is None:
            self._statuses = {job.name: J.pending for job in spec.jobs}
        else:
            self._statuses = {row.name: J(row.status) for row in rows}
        # Taken over: the groups running jobs hold (freed when they end) and jobs that wait.
        for row in rows or ():
            if row.concurrency_group is not None and row.status == J.running:
                self._groups[row.name] = concurrency.Group(row.concurrency_group)
            elif row.waiting_reason is not None and row.status == J.pending:
                self._waiting.add(row.name)
        self._jobs = {job.name: job for job in spec.jobs}
        self._keys = {job.name: job.key for job in spec.jobs}
        self._needs = {job.name: job.needs for job in spec.jobs}
        self._ancestors = graph.ancestors([job.name for job in spec.jobs], self._needs)

    def _should_run(self, job: JobSpec) -> bool:
        """The job's `if` (default `success()`) once its needs finished; raises ExpressionError."""
        statuses = self._statuses
        # Transitive, as on GitHub: a failure anywhere upstream makes success() false.
        failure = any(statuses[a].is_failure for a in self._ancestors[job.name])
        success = not failure and all(statuses[n] == J.success for n in job.needs)
        return job.condition.evaluate(
            success=success,
            failure=failure,
            cancelled=False,
            contexts=self._condition_contexts(job),
        )

    def _first_ready(self) -> list[str]:
        """The ready jobs `_start_ready` would start with one UPDATE each (an `if` that holds;
        no matrix, concurrency group or max-parallel; within max_jobs). Anything else stays
        pending for the walk."""
        if self.ctx.cancel.is_set():
            return []
        statuses = self._statuses
        running = sum(1 for s in statuses.values() if s == J.running)
        first: list[str] = []
        for name in graph.ready(
            list(self._jobs),
            self._needs,
            is_pending=lambda n: statuses[n] == J.pending,
            is_finished=lambda n: statuses[n].finished,
        ):
            job = self._jobs[name]
            if running + len(first) >= self.ctx.max_jobs:
                break
            if job.matrix_template is not None or job.concurrency or job.max_parallel:
                continue
            with contextlib.suppress(ExpressionError):  # the walk records the error
                if self._should_run(job):
                    first.append(name)
        return first

    def _start(self, job: JobSpec, *, reattach: bool = False) -> None:
        assert self._build is not None
        assert self._spec is not None
        try:
            run = job_run(
                self._build,
                self._spec,
                job,
                self._secrets,
                self._needs_context(job),
                self._secret_map,
                self._actions,
            )
        except JobSetupError as exc:
            work = self._setup_failed(job, str(exc))
        else:
            token = run.runtime.action_env.get("ACTIONS_RUNTIME_TOKEN") if run.runtime else None
            if token:
                self.ctx.masker.add(token)  # as GitHub masks it, in case an action prints it
            work = self._run_job(run, reattach=reattach)
        self._tasks[job.name] = asyncio.create_task(work, name=f"job {job.name}")

    def _needs_context(self, job: JobSpec) -> dict[str, dict[str, Any]]:
        """`needs.<job id>`: its result and outputs (a matrix job's combinations together: any
        failure makes it `failure`; outputs of later combinations win, as on GitHub)."""
        context: dict[str, dict[str, Any]] = {}
        for name in job.needs:
            key = self._keys[name]
            entry = context.setdefault(key, {"result": "success", "outputs": {}})
            result = _RESULTS.get(self._statuses[name], "failure")
            if _RANK[result] > _RANK[entry["result"]]:
                entry["result"] = result
            entry["outputs"].update(self._outputs.get(name, {}))
        return context

    async def _setup_failed(self, job: JobSpec, message: str) -> JobResult:
        async with self.ctx.db.transaction() as session:
            # pending jobs start first: the state machine only fails a job that ran
            await state.job(session, self.ctx.build_id, job.name, J.running)
            await state.job(session, self.ctx.build_id, job.name, J.failed, error=message)
            await state.steps(session, self.ctx.build_id, J.skipped, job_name=job.name)
            self._freed(session, job.name)
        return JobResult("failed", message)

    async def _walk(self) -> None:
        """Start jobs as their needs finish until nothing runs and nothing can start."""
        ctx = self.ctx
        statuses, tasks = self._statuses, self._tasks
        cancelling = False
        while True:
            if ctx.cancel.is_set():
                if not cancelling:
                    cancelling = True
                    await self._cancel_pending()
            elif await self._start_ready():
                continue
            self._waiting &= {n for n, s in statuses.items() if s == J.pending}
            if not tasks and not self._waiting:
                break
            ctx.wake.clear()
            waiter = asyncio.create_task(ctx.wake.wait())
            # Concurrency groups change on other replicas too: look again every second then.
            poll = concurrency.POLL_SECONDS if self._waiting or self._groups else None
            done, _ = await asyncio.wait(
                {*tasks.values(), waiter}, return_when=asyncio.FIRST_COMPLETED, timeout=poll
            )
            waiter.cancel()
            await self._stop_flagged_jobs()
            for name, task in list(tasks.items()):
                if task in done:
                    del tasks[name]
                    result = task.result()
                    statuses[name] = J(result.status)
                    if result.status in ("failed", "timed_out", "error"):
                        await self._fail_fast(self._jobs[name])
            if ctx.detach and not tasks:
                return

    async def _start_ready(self) -> bool:
        """Start or skip what is ready; True when a matrix was expanded (walk again)."""
        statuses = self._statuses
        running = sum(1 for s in statuses.values() if s == J.running)
        # Jobs are in topological order, so a job skipped here is decided before its dependents
        # are looked at in the same pass.
        candidates = graph.ready(
            list(self._jobs),
            self._needs,
            is_pending=lambda n: statuses[n] == J.pending,
            is_finished=lambda n: statuses[n].finished,
        )
        for name in candidates:
            job = self._jobs[name]
            try:
                run = self._should_run(job)
            except ExpressionError as exc:
                await self._setup_failed(job, f"Error evaluating the job's `if`: {exc}")
                statuses[name] = J.failed
                continue
            if run and job.matrix_template is not None:
                # The graph changes: look again from the start, with the combinations in it.
                await self._expand(job)
                return True
            if not run:
                async with self.ctx.db.transaction() as session:
                    await state.job(session, self.ctx.build_id, name, J.skipped)
                    await state.steps(session, self.ctx.build_id, J.skipped, job_name=name)
                statuses[name] = J.skipped
                continue
            if running >= self.ctx.max_jobs:
                continue
            if job.max_parallel is not None:
                siblings = [
                    n for n, k in self._keys.items() if k == job.key and statuses[n] == J.running
                ]
                if len(siblings) >= job.max_parallel:
                    continue
            if not await self._enter(job):
                continue
            statuses[name] = J.running
            running += 1
            self._start(job)
        return False

    async def _enter(self, job: JobSpec) -> bool:
        """Move a ready job to running; one with a concurrency group only once it holds it."""
        assert self._build is not None
        name, group = job.name, None
        try:
            group = concurrency.evaluate(job.concurrency, self._condition_contexts(job))
        except ExpressionError as exc:
            await self._setup_failed(job, f"Error evaluating the job's `concurrency`: {exc}")
            self._statuses[name] = J.failed
            return False
        async with self.ctx.db.transaction() as session:
            if group is None:
                return await state.job(session, self.ctx.build_id, name, J.running)
            first = name not in self._waiting
            decision = await concurrency.enter_job(session, self._build, name, group, first=first)
        self._waiting.discard(name)
        if decision.started:
            self._groups[name] = group
        elif decision.gone:  # replaced by a newer waiter, or a deadlock with the build's group
            self._statuses[name] = J.cancelled
        else:
            self._waiting.add(name)
        return decision.started

    async def _stop_flagged_jobs(self) -> None:
        """Stop running jobs another build's `cancel-in-progress` asked to stop."""
        running = {n: self._job_cancels[n] for n in self._groups if n in self._job_cancels}
        await concurrency.stop_flagged(self.ctx.db, self.ctx.build_id, running)

    def _freed(self, session: AsyncSession, job_name: str | None = None) -> None:
        """Record that a job's (or, with None, the build's) concurrency group is free."""
        assert self._build is not None
        key = self._build.concurrency_key
        if job_name is not None:
            group = self._groups.pop(job_name, None)
            key = group.key if group is not None else None
        if key is not None:
            record_event(
                session, concurrency.GroupChanged(self.ctx.build_id, self._build.pipeline_id, key)
            )

    def _combinations(self, job: JobSpec) -> list[JobSpec]:
        """One spec per combination of a matrix computed now (raises MatrixError)."""
        contexts = self._condition_contexts(job)
        combinations = expand_template(job.key, job.matrix_template, contexts)
        specs: list[JobSpec] = []
        for i, combination in enumerate(combinations):
            name = combination_name(job.key, combination)
            display = name
            if job.display_name != job.name:
                with contextlib.suppress(ExpressionError):
                    display = interpolate(job.display_name, {**contexts, "matrix": combination})
            specs.append(
                dataclasses.replace(
                    job,
                    name=name,
                    display_name=display[:255],
                    index=job.index + i,
                    matrix=combination,
                    matrix_template=None,
                )
            )
        return specs

    async def _expand(self, job: JobSpec) -> None:
        """Replace a placeholder job by its combinations, in the database and here."""
        assert self._build is not None
        try:
            specs = self._combinations(job)
            if len(self._jobs) - 1 + len(specs) > MAX_JOBS:
                raise MatrixError(f"the build would have more than {MAX_JOBS} jobs")
        except MatrixError as exc:
            await self._setup_failed(job, str(exc))
            self._statuses[job.name] = J.failed
            return
        checkout = bool(self._build.repo_url)
        jobs = [
            {
                "build_id": self.ctx.build_id,
                "name": s.name,
                "display_name": s.display_name,
                "index": s.index,
                "runs_on": list(s.runs_on),
                "environment": None,
            }
            for s in specs
        ]
        steps = [
            {"build_id": self.ctx.build_id, "job_name": s.name, "index": p.index, "name": p.name}
            for s in specs
            for p in planned_steps(s, checkout=checkout, posts=post_uses(self._actions.pins))
        ]
        async with self.ctx.db.transaction() as session:
            await results.replace_placeholder(session, self.ctx.build_id, job.name, jobs, steps)
        self._replace(job, specs)

    def _replace(self, placeholder: JobSpec, specs: list[JobSpec]) -> None:
        names = tuple(s.name for s in specs)
        jobs: dict[str, JobSpec] = {}
        for name, job in self._jobs.items():
            if name == placeholder.name:
                jobs.update((s.name, s) for s in specs)
            elif placeholder.name in job.needs:
                needs = tuple(
                    n
                    for need in job.needs
                    for n in (names if need == placeholder.name else (need,))
                )
                jobs[name] = dataclasses.replace(job, needs=needs)
            else:
                jobs[name] = job
        self._jobs = jobs
        self._statuses.pop(placeholder.name, None)
        for s in specs:
            self._statuses.setdefault(s.name, J.pending)
        self._keys = {name: job.key for name, job in jobs.items()}
        self._needs = {name: job.needs for name, job in jobs.items()}
        self._ancestors = graph.ancestors(list(jobs), self._needs)

    async def _fail_fast(self, job: JobSpec) -> None:
        if job.matrix is None or not job.fail_fast:
            return
        statuses, tasks = self._statuses, self._tasks
        siblings = [n for n in statuses if n != job.name and self._keys.get(n) == job.key]
        await self._cancel_pending_jobs([n for n in siblings if statuses[n] == J.pending])
        for name in siblings:
            event = self._job_cancels.get(name)  # absent: that sibling already ended
            if name in tasks and event is not None:
                event.set()

    async def _cancel_pending(self) -> None:
        for event in self._job_cancels.values():
            event.set()
        await self._cancel_pending_jobs([n for n, s in self._statuses.items() if s == J.pending])
        await self.ctx.runner.cancel_build(self.ctx.build_id)

    async def _cancel_pending_jobs(self, names: list[str]) -> None:
        """Jobs that never started become `cancelled`, their steps `skipped`."""
        if not names:
            return
        async with self.ctx.db.transaction() as session:
            for name in await state.jobs(session, self.ctx.build_id, J.cancelled, names=names):
                self._statuses[name] = J.cancelled
                await state.steps(session, self.ctx.build_id, J.skipped, job_name=name)

    async def _run_job(self, run: JobRun, *, reattach: bool) -> JobResult:
        ctx = self.ctx
        name = run.job_name
        self._job_cancels[name] = run.cancel
        if ctx.cancel.is_set():
            run.cancel.set()
        ctx.metrics.running_jobs.inc()
        try:
            reporter = BuildReporter(ctx, name, run.runtime)
            result = await ctx.runner.run_job(run, reporter, resume=reattach)
        except Exception as exc:
            log.exception("runner failed on job %r of build %s", name, ctx.build_id)
            result = JobResult(
                "error", f"the {ctx.runner.name} runner failed: {type(exc).__name__}: {exc}"
            )
        finally:
            ctx.metrics.running_jobs.dec()
            self._job_cancels.pop(name, None)
        if ctx.detach and result.status in ("cancelled", "error") and ctx.runner.can_reattach:
            return result
        await ctx.writer.flush(ctx.build_id)
        outputs = run.runtime.job_outputs() if run.runtime is not None else {}
        if run.runtime is not None and run.runtime.continue_on_error:
            self._tolerated.add(name)
        self._outputs[name] = outputs
        async with ctx.db.transaction() as session:
            if outputs:
                await results.store_job_outputs(session, ctx.build_id, name, outputs)
            await state.job(session, ctx.build_id, name, J(result.status), error=result.error)
            # Steps the runner never reached: a cancelled or broken job leaves them pending.
            await state.steps(session, ctx.build_id, J.skipped, job_name=name)
            leftover = J.cancelled if result.status == "cancelled" else J.error
            await state.steps(session, ctx.build_id, leftover, job_name=name)
            self._freed(session, name)
        return result

    async def _finish(self) -> None:
        ctx = self.ctx
        await ctx.writer.flush(ctx.build_id)
        values = {s for n, s in self._statuses.items() if n not in self._tolerated}
        if ctx.cancel.is_set():
            final, error = BuildStatus.cancelled, None
        elif J.error in values:
            final, error = BuildStatus.error, "a job failed for an infrastructure reason"
        elif J.timed_out in values:
            final, error = BuildStatus.timed_out, None
        elif J.failed in values:
            final, error = BuildStatus.failed, None
        elif J.cancelled in values:  # e.g. a job replaced in or stopped by a concurrency group
            final, error = BuildStatus.cancelled, None
        else:
            final, error = BuildStatus.success, None
        try:
            await ctx.runner.cleanup_build(ctx.build_id)
        except Exception:
            log.exception(
                "cleaning up build %s on the %s runner failed", ctx.build_id, ctx.runner.name
            )
        async with ctx.db.transaction() as session:
            moved = await state.build(session, ctx.build_id, final, error=error)
            build = await session.get(Build, ctx.build_id) if moved else None
            self._freed(session)
        if build is not None:
            ctx.metrics.builds_finished.labels(final).inc()
            if build.started_at and build.finished_at:
                ctx.metrics.build_duration.observe(
                    (build.finished_at - build.started_at).total_seconds()
                )
