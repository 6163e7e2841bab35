"""A new build's jobs, edges and planned steps: written in bulk, and its detail answered from
what was written (the create's response needs no read after the commit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models import (
    BuildDetail,
    BuildJob,
    BuildJobEdge,
    BuildPublic,
    BuildStep,
    EdgePublic,
    JobPublic,
    JobStatus,
    StepPublic,
)
from app.models.types import clip
from app.services.plan import planned_steps
from app.workflow import WorkflowSpec


@dataclass(frozen=True)
class WrittenDag:
    """The rows as inserted, each with its id (every job and step `pending`)."""

    jobs: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    steps: list[dict[str, Any]]


async def _insert_returning_ids(
    session: AsyncSession, model: type[Any], rows: list[dict[str, Any]]
) -> None:
    """One bulk INSERT … RETURNING id (in the order of `rows`); sets each row's "id"."""
    if not rows:
        return
    stmt = insert(model).returning(model.id, sort_by_parameter_order=True)
    ids = (await session.exec(stmt, params=rows)).scalars().all()
    for row, row_id in zip(rows, ids, strict=True):
        row["id"] = int(row_id)


async def insert_dag(
    session: AsyncSession, build_id: int, spec: WorkflowSpec, *, checkout: bool
) -> WrittenDag:
    """The build's jobs, `needs` edges and planned steps, all pending, in three bulk inserts."""
    jobs = [
        {
            "build_id": build_id,
            "name": j.name,
            "display_name": clip(j.display_name),
            "index": j.index,
            "runs_on": list(j.runs_on),
            "environment": (
                {"name": j.environment.name, "url": j.environment.url} if j.environment else None
            ),
        }
        for j in spec.jobs
    ]
    await _insert_returning_ids(session, BuildJob, jobs)
    edges = [{"build_id": build_id, "from_job": a, "to_job": b} for a, b in spec.edges]
    await _insert_returning_ids(session, BuildJobEdge, edges)
    steps = [
        {"build_id": build_id, "job_name": j.name, "index": s.index, "name": clip(s.name)}
        for j in spec.jobs
        for s in planned_steps(j, checkout=checkout)
    ]
    await _insert_returning_ids(session, BuildStep, steps)
    await session.flush()
    return WrittenDag(jobs=jobs, edges=edges, steps=steps)


def written_detail(
    build: BuildPublic, yaml_sha256: str, event: Any, dag: WrittenDag
) -> BuildDetail:
    """What `builds.detail` reads back for a build just created, from the rows written: the
    same jobs (by index), steps (by index within a job), edges and needs (in insert order)."""
    pending = JobStatus.pending
    steps_by_job: dict[str, list[StepPublic]] = {}
    for step in sorted(dag.steps, key=lambda s: (s["job_name"], s["index"])):
        steps_by_job.setdefault(step["job_name"], []).append(
            StepPublic(
                id=step["id"],
                index=step["index"],
                name=step["name"],
                status=pending,
                started_at=None,
                finished_at=None,
                exit_code=None,
            )
        )
    needs: dict[str, list[str]] = {}
    for edge in dag.edges:
        needs.setdefault(edge["to_job"], []).append(edge["from_job"])
    jobs = [
        JobPublic(
            id=job["id"],
            name=job["name"],
            display_name=job["display_name"],
            index=job["index"],
            status=pending,
            started_at=None,
            finished_at=None,
            error=None,
            runs_on=job["runs_on"],
            environment=job["environment"],
            needs=needs.get(job["name"], []),
            steps=steps_by_job.get(job["name"], []),
        )
        for job in sorted(dag.jobs, key=lambda j: j["index"])
    ]
    return BuildDetail(
        **build.model_dump(),
        yaml_sha256=yaml_sha256,
        event=event,
        annotations=[],
        jobs=jobs,
        edges=[EdgePublic(from_job=e["from_job"], to_job=e["to_job"]) for e in dag.edges],
    )
