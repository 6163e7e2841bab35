"""A new build's jobs, edges and planned steps: written in bulk, and its detail answered from
what was written (the create's response needs no read after the commit)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Table, insert
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from app.logs.masking import masked_variables
from app.models import (
    Build,
    BuildDetail,
    BuildJob,
    BuildJobEdge,
    BuildPublic,
    BuildSnapshot,
    BuildStep,
    EdgePublic,
    JobPublic,
    StepPublic,
)
from app.models.types import clip
from app.services.plan import planned_steps
from app.workflow import WorkflowSpec

# The job columns the API shows as they are (builds.detail uses the same).
JOB_FIELDS = tuple(set(JobPublic.model_fields) & set(BuildJob.model_fields))
BUILDS: Table = SQLModel.metadata.tables[Build.__tablename__]
SNAPSHOTS: Table = SQLModel.metadata.tables[BuildSnapshot.__tablename__]
STEP_FIELDS = tuple(set(StepPublic.model_fields) & set(BuildStep.model_fields))


def with_defaults(
    model: type[SQLModel], row: dict[str, Any], fields: Iterable[str] | None = None
) -> dict[str, Any]:
    """`fields` (every column but the id when None) of a row, each one it leaves out at the
    table model's default: what the ORM would insert, and what a read returns, without
    building an ORM instance (a SQLModel table model's constructor costs more than the whole
    rest of the create's answer)."""
    names = fields if fields is not None else (k for k in model.model_fields if k != "id")
    return {
        k: row[k] if k in row else model.model_fields[k].get_default(call_default_factory=True)
        for k in names
    }


@cache
def _insert_one(table: Table) -> Any:
    return insert(table).returning(table.c.id)


async def insert_row(session: AsyncSession, table: Table, row: dict[str, Any]) -> int:
    """One Core INSERT … RETURNING id; the row as parameters (not .values()), so the statement
    is the same every time, built and compiled once."""
    result = await session.exec(_insert_one(table), params=row)
    return int(result.scalar_one())


@dataclass(frozen=True)
class WrittenDag:
    """The rows as inserted, each with its id (every job and step `pending`)."""

    jobs: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    steps: list[dict[str, Any]]


@cache
def _bulk_insert(table: Table) -> Any:
    # Core on the table, built once: the ORM's bulk INSERT (insert(model)) re-derived every
    # row's parameters from the model's attributes, a tenth of a create's CPU.
    return insert(table).returning(table.c.id, sort_by_parameter_order=True)


async def insert_returning_ids(
    session: AsyncSession, model: type[SQLModel], rows: list[dict[str, Any]]
) -> None:
    """One bulk INSERT … RETURNING id (in the order of `rows`); sets each row's "id"."""
    if not rows:
        return
    stmt = _bulk_insert(SQLModel.metadata.tables[str(model.__tablename__)])
    ids = (await session.exec(stmt, params=rows)).scalars().all()
    for row, row_id in zip(rows, ids, strict=True):
        row["id"] = int(row_id)


def plan_dag(
    spec: WorkflowSpec, *, checkout: bool, posts: frozenset[str] = frozenset()
) -> WrittenDag:
    """The rows of a build's jobs, `needs` edges and planned steps, all pending (no I/O; the
    build id and the row ids are set when they are inserted: insert_dags)."""
    jobs = [
        {
            "name": j.name,
            "display_name": clip(j.display_name),
            "index": j.index,
            "runs_on": list(j.runs_on),
            "environment": (
                {"name": j.environment.name, "url": j.environment.url} if j.environment else None
            ),
            "pending_expansion": j.matrix_template is not None,
        }
        for j in spec.jobs
    ]
    edges = [{"from_job": a, "to_job": b} for a, b in spec.edges]
    steps = [
        {"job_name": j.name, "index": s.index, "name": clip(s.name)}
        for j in spec.jobs
        if j.matrix_template is None  # a placeholder's steps are its combinations' to plan
        for s in planned_steps(j, checkout=checkout, posts=posts)
    ]
    return WrittenDag(jobs=jobs, edges=edges, steps=steps)


async def insert_dags(session: AsyncSession, dags: list[tuple[int, WrittenDag]]) -> None:
    """The planned rows of several builds (build id, rows): one bulk INSERT per table for all
    of them, whatever their number; each row gets its build id and its own id."""
    jobs: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    for build_id, dag in dags:
        for part, rows in ((dag.jobs, jobs), (dag.edges, edges), (dag.steps, steps)):
            for row in part:
                row["build_id"] = build_id
            rows.extend(part)
    # none for edges without `needs`, or steps when every job is a matrix placeholder
    for model, rows in ((BuildJob, jobs), (BuildJobEdge, edges), (BuildStep, steps)):
        await insert_returning_ids(session, model, rows)


async def insert_dag(
    session: AsyncSession,
    build_id: int,
    spec: WorkflowSpec,
    *,
    checkout: bool,
    posts: frozenset[str] = frozenset(),
) -> WrittenDag:
    """The build's jobs, `needs` edges and planned steps, all pending, in three bulk inserts."""
    dag = plan_dag(spec, checkout=checkout, posts=posts)
    await insert_dags(session, [(build_id, dag)])
    await session.flush()
    return dag


def written_detail(
    build: BuildPublic, yaml_sha256: str, event: Any, dag: WrittenDag
) -> BuildDetail:
    """What `builds.detail` reads back for a build just created, from the rows written: the
    same jobs (by index), steps (by index within a job), edges and needs (in insert order);
    every other column at its model default, as the insert left it."""
    steps_by_job: dict[str, list[StepPublic]] = {}
    for step in sorted(dag.steps, key=lambda s: (s["job_name"], s["index"])):
        public_step = StepPublic.model_validate(with_defaults(BuildStep, step, STEP_FIELDS))
        steps_by_job.setdefault(step["job_name"], []).append(public_step)
    needs: dict[str, list[str]] = {}
    for edge in dag.edges:
        needs.setdefault(edge["to_job"], []).append(edge["from_job"])
    jobs = []
    for row in sorted(dag.jobs, key=lambda j: j["index"]):
        jobs.append(
            JobPublic.model_validate(
                {
                    **with_defaults(BuildJob, row, JOB_FIELDS),
                    "outputs": {},
                    "needs": needs.get(row["name"], []),
                    "steps": steps_by_job.get(row["name"], []),
                }
            )
        )
    return BuildDetail(
        **build.model_dump(),
        yaml_sha256=yaml_sha256,
        event=event,
        annotations=[],
        jobs=jobs,
        edges=[EdgePublic(from_job=e["from_job"], to_job=e["to_job"]) for e in dag.edges],
    )


def public(build: Build) -> BuildPublic:
    out = BuildPublic.model_validate(build)
    out.variables = masked_variables(build.variables)
    return out


def public_row(row: dict[str, Any]) -> BuildPublic:
    """`public` of a builds row as a mapping (every column)."""
    return BuildPublic.model_validate({**row, "variables": masked_variables(row["variables"])})
