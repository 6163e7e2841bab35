"""A new build, stored: its workflow parsed (or refused with line and column), its rows planned
(the build, its snapshot, jobs, `needs` edges and planned steps), written in bulk with the other
creates of the same transaction, and its detail answered from what was written (no read back).

`submit` in app/services/builds.py is the create's unit of work; `create_build` serves the other
callers (a retry, `ci-executor run`, tests), which need the ORM instance at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import BEFORE_COMMIT
from app.errors import Invalid
from app.models import Build, BuildDetail, BuildSnapshot, BuildStatus
from app.models.types import NAME_MAX, utcnow
from app.services import concurrency
from app.services.dag import (
    SNAPSHOTS,
    WrittenDag,
    insert_dag,
    insert_dags,
    insert_returning_ids,
    insert_row,
    plan_dag,
    public,
    public_row,
    with_defaults,
    written_detail,
)
from app.services.numbers import next_number, number_last, placeholder_number, take_numbers
from app.services.plan import post_uses
from app.workflow import WorkflowError, WorkflowSpec, parse_workflow


@dataclass(frozen=True)
class NewBuild:
    pipeline_id: str
    triggered_by: str
    workflow_yaml: str
    commit_sha: str | None = None
    branch: str | None = None
    repo_url: str | None = None
    variables: dict[str, str] | None = None
    dispatch: bool = True
    retry_of: int | None = None
    idempotency_key: str | None = None
    event_name: str | None = None
    event: dict[str, Any] | None = None
    request_sha256: str | None = None  # of the create request, for Idempotency-Key reuse
    secrets_sealed: str | None = None  # app/secrets.py; variables then hold *** in their place
    # The remote actions, pinned (app/actions/support.py `resolve_actions`); a retry copies them.
    actions: dict[str, Any] | None = None


def parse_or_422(text: str) -> WorkflowSpec:
    try:
        return parse_workflow(text)
    except WorkflowError as exc:
        raise Invalid(
            [{"line": p.line, "column": p.column, "message": p.message} for p in exc.problems]
        ) from exc


async def create_build(
    session: AsyncSession, new: NewBuild, spec: WorkflowSpec | None = None
) -> Build:
    """Validate the workflow and store the build, its snapshot, jobs, edges and steps.

    Raises Invalid (422, every problem with line and column) before anything is written.
    `spec`: the workflow already parsed (callers parse before opening the transaction)."""
    return (await _create(session, new, spec))[0]


@dataclass
class Written:
    """A create of `submit`: its detail, set once its rows are written. A create whose
    workflow has no `concurrency` is written with the other creates of its transaction, one
    INSERT per table for all of them, just before the commit (_write_planned): on Postgres a
    group of 50 creates took 250 statements one after another, now 5 (6 with `needs`)."""

    detail: BuildDetail | None = None


@dataclass
class _Planned:
    values: dict[str, Any]  # the builds row; its number and id are set when it is written
    snapshot: dict[str, Any]
    dag: WrittenDag
    event: Any
    written: Written


_PLANNED = "planned creates"  # session.info: the transaction's creates not written yet


async def create_written(session: AsyncSession, new: NewBuild, spec: WorkflowSpec) -> Written:
    """create_build for `submit`: the new build's detail made from what was written (no read
    back), its rows inserted by Core INSERTs shared with the transaction's other creates (no
    ORM instance, no unit-of-work flush) unless the workflow's `concurrency` needs the
    instance (then at once). The detail is there once the transaction has committed; the
    session must be one of `Database.transaction()`, which runs the deferred writes."""
    if spec.concurrency is not None:
        return Written((await _create(session, new, spec))[1])
    _check_job_names(spec)
    values = _build_values(new, utcnow(), number=0)
    written = Written()
    planned = _Planned(
        values=values,
        snapshot=_snapshot_row(new),
        dag=plan_dag(spec, checkout=bool(new.repo_url), posts=post_uses(new.actions)),
        event=new.event,
        written=written,
    )
    pending: list[_Planned] | None = session.info.get(_PLANNED)
    if pending is None:
        pending = session.info[_PLANNED] = []
        session.info.setdefault(BEFORE_COMMIT, []).append(_write_planned)
    pending.append(planned)
    return written


async def _write_planned(session: AsyncSession) -> None:
    """The transaction's planned creates, written: their numbers (one counter upsert per
    pipeline, the pipelines in sorted order so two transactions never deadlock on each other's
    counters), then one bulk INSERT per table for all of them."""
    planned: list[_Planned] = session.info.pop(_PLANNED, [])
    by_pipeline: dict[str, list[_Planned]] = {}
    for p in planned:
        by_pipeline.setdefault(p.values["pipeline_id"], []).append(p)
    for pipeline_id in sorted(by_pipeline):
        group = by_pipeline[pipeline_id]
        last = await take_numbers(session, pipeline_id, len(group))
        for offset, p in enumerate(group):
            p.values["number"] = last - len(group) + 1 + offset
    await insert_returning_ids(session, Build, [p.values for p in planned])
    snapshots = [{**p.snapshot, "build_id": p.values["id"]} for p in planned]
    await insert_returning_ids(session, BuildSnapshot, snapshots)
    await insert_dags(session, [(p.values["id"], p.dag) for p in planned])
    for p in planned:
        shown = public_row(p.values)
        p.written.detail = written_detail(shown, p.snapshot["yaml_sha256"], p.event, p.dag)


def _snapshot_row(new: NewBuild) -> dict[str, Any]:
    return {
        "pipeline_id": new.pipeline_id,
        "yaml_sha256": hashlib.sha256(new.workflow_yaml.encode()).hexdigest(),
        "workflow_yaml": new.workflow_yaml,
        "actions": new.actions,
    }


def _build_values(new: NewBuild, now: datetime, number: int) -> dict[str, Any]:
    """The builds row of a create, every column (its id aside) as the insert leaves it."""
    return with_defaults(
        Build,
        {
            "pipeline_id": new.pipeline_id,
            "number": number,
            "triggered_by": new.triggered_by,
            "status": BuildStatus.queued.value,
            "commit_sha": new.commit_sha,
            "branch": new.branch,
            "repo_url": new.repo_url,
            "variables": dict(new.variables or {}),
            "created_at": now,
            "retry_of": new.retry_of,
            "idempotency_key": new.idempotency_key,
            "event_name": new.event_name,
            "event": new.event,
            "request_sha256": new.request_sha256,
            "secrets_sealed": new.secrets_sealed,
            # Set optimistically in the same transaction: if the publish after commit fails,
            # the requeue sweep sees a stale dispatched_at and publishes again.
            "dispatched_at": now if new.dispatch else None,
        },
    )


async def _create(
    session: AsyncSession, new: NewBuild, spec: WorkflowSpec | None
) -> tuple[Build, BuildDetail]:
    """One create written at once, with its ORM instance (a `concurrency` workflow's group is
    looked up with it; create_build's callers use it)."""
    if spec is None:
        # Parsing a large workflow takes a while: never on the event loop.
        spec = await asyncio.to_thread(parse_or_422, new.workflow_yaml)
    _check_job_names(spec)
    # On Postgres the number is taken last (see app/services/numbers.py), unless the workflow's
    # `concurrency` may read it (github.run_number) and locks the pipeline anyway.
    late = session.bind is not None and session.bind.dialect.name == "postgresql"
    late = late and spec.concurrency is None
    number = placeholder_number() if late else await next_number(session, new.pipeline_id)
    values = _build_values(new, utcnow(), number)
    build = Build(**values)
    session.add(build)
    await session.flush()
    assert build.id is not None
    build_id = build.id
    await concurrency.on_create(session, build, spec)
    snapshot = _snapshot_row(new)
    await insert_row(session, SNAPSHOTS, {**snapshot, "build_id": build_id})
    dag = await insert_dag(
        session, build_id, spec, checkout=bool(new.repo_url), posts=post_uses(new.actions)
    )
    if late:
        number = await number_last(session, build_id, new.pipeline_id)
        set_committed_value(build, "number", number)
    return build, written_detail(public(build), snapshot["yaml_sha256"], new.event, dag)


def _check_job_names(spec: WorkflowSpec) -> None:
    """Job names identify rows (build_jobs.name, 255 characters on every database): refuse what
    would not fit rather than fail on Postgres only. Display names are clipped instead."""
    too_long = [j.name for j in spec.jobs if len(j.name) > NAME_MAX]
    if too_long:
        raise Invalid(
            [
                {
                    "line": 0,
                    "column": 0,
                    "message": f"job name '{name[:60]}…' is {len(name)} characters long; job ids "
                    f"and expanded matrix names may have at most {NAME_MAX}",
                }
                for name in too_long[:10]
            ]
        )
