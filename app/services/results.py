"""Step and job results beyond statuses: outputs, annotations, step summaries (issue 11).

Stored as soon as a step or job ends, so a re-attaching executor and every replica's API see them.
Writes replace what a step already stored (a re-attached runner may report a step twice).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Table, bindparam, delete, insert
from sqlalchemy import select as core_select
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models import BuildAnnotation, BuildOutput, BuildStepSummary
from app.workflow.commands import Annotation

JOB_OUTPUT = -1  # step_index of a job's `outputs:` rows


async def store_step(
    session: AsyncSession,
    build_id: int,
    job_name: str,
    index: int,
    *,
    outputs: dict[str, str],
    summary: str | None,
    annotations: Iterable[Annotation],
) -> None:
    where = (
        col(BuildOutput.build_id) == build_id,
        col(BuildOutput.job_name) == job_name,
        col(BuildOutput.step_index) == index,
    )
    if outputs:
        await session.exec(delete(BuildOutput).where(*where))
        await session.exec(
            insert(BuildOutput),
            params=[
                {
                    "build_id": build_id,
                    "job_name": job_name,
                    "step_index": index,
                    "name": k,
                    "value": v,
                }
                for k, v in outputs.items()
            ],
        )
    if summary is not None:
        await session.exec(
            delete(BuildStepSummary).where(
                col(BuildStepSummary.build_id) == build_id,
                col(BuildStepSummary.job_name) == job_name,
                col(BuildStepSummary.step_index) == index,
            )
        )
        session.add(
            BuildStepSummary(
                build_id=build_id, job_name=job_name, step_index=index, content=summary
            )
        )
    for a in annotations:
        session.add(
            BuildAnnotation(
                build_id=build_id,
                job_name=job_name,
                step_index=index,
                level=a.level,
                message=a.message,
                title=a.title,
                file=a.file,
                line=a.line,
                end_line=a.end_line,
                col=a.col,
                end_column=a.end_column,
            )
        )
    await session.flush()


async def store_job_outputs(
    session: AsyncSession, build_id: int, job_name: str, outputs: dict[str, str]
) -> None:
    await store_step(
        session, build_id, job_name, JOB_OUTPUT, outputs=outputs, summary=None, annotations=()
    )


async def job_outputs(session: AsyncSession, build_id: int) -> dict[str, dict[str, str]]:
    """Every job's `outputs:` values, by job name (what `needs.<job>.outputs` reads)."""
    rows = (
        await session.exec(
            select(BuildOutput).where(
                BuildOutput.build_id == build_id, BuildOutput.step_index == JOB_OUTPUT
            )
        )
    ).all()
    result: dict[str, dict[str, str]] = {}
    for row in rows:
        result.setdefault(row.job_name, {})[row.name] = row.value
    return result


# Built once, the build's id bound at execution (`:b`), on table columns (rows as mappings, not
# ORM objects): see builds.detail.
_ANNOTATION_T: Table = SQLModel.metadata.tables[BuildAnnotation.__tablename__]
_SUMMARY_T: Table = SQLModel.metadata.tables[BuildStepSummary.__tablename__]
_OUTPUT_T: Table = SQLModel.metadata.tables[BuildOutput.__tablename__]
_ANNOTATIONS = (
    core_select(*_ANNOTATION_T.c)
    .where(_ANNOTATION_T.c.build_id == bindparam("b"))
    .order_by(_ANNOTATION_T.c.id)
)
_SUMMARIES = core_select(*_SUMMARY_T.c).where(_SUMMARY_T.c.build_id == bindparam("b"))
_OUTPUTS = (
    core_select(*_OUTPUT_T.c).where(_OUTPUT_T.c.build_id == bindparam("b")).order_by(_OUTPUT_T.c.id)
)


async def for_detail(session: AsyncSession, build_id: int) -> dict[str, Any]:
    """Annotations, step summaries and outputs of a build, for the build detail."""
    by_build = {"b": build_id}
    conn = await session.connection()
    annotations = (await conn.execute(_ANNOTATIONS, by_build)).mappings().all()
    summaries = (await conn.execute(_SUMMARIES, by_build)).mappings().all()
    outputs = (await conn.execute(_OUTPUTS, by_build)).mappings().all()
    return {"annotations": annotations, "summaries": summaries, "outputs": outputs}


async def replace_placeholder(
    session: AsyncSession,
    build_id: int,
    placeholder: str,
    jobs: list[dict[str, Any]],
    steps: list[dict[str, Any]],
) -> None:
    """A job whose matrix was computed at run time: its placeholder row (job, steps, edges) is
    replaced by one row per combination, with the placeholder's edges copied to each."""
    from app.models import BuildJob, BuildJobEdge, BuildStep

    edges = (
        await session.exec(
            select(BuildJobEdge).where(
                BuildJobEdge.build_id == build_id,
                (col(BuildJobEdge.from_job) == placeholder)
                | (col(BuildJobEdge.to_job) == placeholder),
            )
        )
    ).all()
    names = [job["name"] for job in jobs]
    new_edges = [
        {
            "build_id": build_id,
            "from_job": name if edge.from_job == placeholder else edge.from_job,
            "to_job": name if edge.to_job == placeholder else edge.to_job,
        }
        for edge in edges
        for name in names
    ]
    await session.exec(
        delete(BuildJobEdge).where(
            col(BuildJobEdge.build_id) == build_id,
            (col(BuildJobEdge.from_job) == placeholder) | (col(BuildJobEdge.to_job) == placeholder),
        )
    )
    await session.exec(
        delete(BuildStep).where(
            col(BuildStep.build_id) == build_id, col(BuildStep.job_name) == placeholder
        )
    )
    await session.exec(
        delete(BuildJob).where(
            col(BuildJob.build_id) == build_id, col(BuildJob.name) == placeholder
        )
    )
    await session.exec(insert(BuildJob), params=jobs)
    if steps:
        await session.exec(insert(BuildStep), params=steps)
    if new_edges:
        await session.exec(insert(BuildJobEdge), params=new_edges)
    await session.flush()
