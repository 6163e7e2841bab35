"""Build routes: create, list, get, snapshot, cancel, retry."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy.exc import IntegrityError

from app.api.deps import (
    DbDep,
    PipelinesDep,
    QueueDep,
    ReaderDep,
    ReadSessionDep,
    SchedulerDep,
    SettingsDep,
    WriterDep,
)
from app.errors import Invalid, TooLarge
from app.models import (
    BuildCreate,
    BuildDetail,
    BuildPage,
    BuildStatus,
    RetryRequest,
    SnapshotPublic,
)
from app.services import builds as service
from app.services.builds import NewBuild

log = logging.getLogger(__name__)
router = APIRouter(tags=["builds"])

BuildId = Annotated[int, "build id"]


async def _dispatch(queue: QueueDep, build_id: int) -> None:
    try:
        await queue.publish(build_id)
    except Exception:
        # The build stays queued with a dispatched_at stamp; the requeue sweep publishes again.
        log.warning(
            "publishing build %s failed; the requeue sweep will retry", build_id, exc_info=True
        )


@router.post("/builds", status_code=201, response_model=BuildDetail)
async def create_build(
    body: BuildCreate,
    response: Response,
    caller: WriterDep,
    db: DbDep,
    settings: SettingsDep,
    queue: QueueDep,
    pipelines: PipelinesDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> BuildDetail:
    """CreateBuild: validate the workflow, store the build with its snapshot, jobs, edges and
    steps (all `queued`/`pending`), and publish its id unless `dispatch` is false.

    Without `workflow_yaml` the pipeline's current YAML is read from pipeline_service.
    An invalid workflow is a 422 whose `detail` lists every problem with `line` and `column`;
    nothing is stored. With an `Idempotency-Key` header, a repeat of a key already used for the
    same pipeline returns the first build (200) instead of creating another.
    """
    if len(body.variables) > settings.max_variables:
        raise Invalid(f"too many variables: {len(body.variables)} > {settings.max_variables}")
    yaml_text = body.workflow_yaml
    if yaml_text is None:
        yaml_text = await pipelines.workflow_yaml(body.pipeline_id)
    if len(yaml_text.encode()) > settings.max_workflow_bytes:
        raise TooLarge(f"workflow_yaml is larger than {settings.max_workflow_bytes} bytes")
    new = NewBuild(
        pipeline_id=body.pipeline_id,
        triggered_by=body.triggered_by or caller.name,
        workflow_yaml=yaml_text,
        commit_sha=body.commit_sha,
        branch=body.branch,
        repo_url=body.repo_url,
        variables=body.variables,
        dispatch=body.dispatch,
        idempotency_key=idempotency_key,
    )
    build_id: int | None = None
    if idempotency_key:
        async with db.read() as session:
            existing = await service.find_idempotent(session, body.pipeline_id, idempotency_key)
            if existing is not None:
                response.status_code = 200
                return await service.detail(session, existing.id or 0)
    try:
        async with db.transaction() as session:
            build_id = (await service.create_build(session, new)).id
    except IntegrityError as exc:
        if not (idempotency_key and service.is_idempotency_race(exc)):
            raise
        async with db.read() as session:  # a concurrent request with the same key won
            existing = await service.find_idempotent(session, body.pipeline_id, idempotency_key)
            assert existing is not None
            assert existing.id is not None
            response.status_code = 200
            return await service.detail(session, existing.id)
    assert build_id is not None
    if body.dispatch:
        await _dispatch(queue, build_id)
    async with db.read() as session:
        return await service.detail(session, build_id)


@router.get("/builds", response_model=BuildPage)
async def list_builds(
    session: ReadSessionDep,
    _caller: ReaderDep,
    pipeline_id: str | None = None,
    status: BuildStatus | None = None,
    branch: str | None = None,
    triggered_by: Annotated[
        str | None, Query(max_length=255, description="Who started the build (the actor).")
    ] = None,
    page: Annotated[int, Query(ge=1)] = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> BuildPage:
    """ListBuilds: newest first, filtered by pipeline, status, branch and actor
    (`triggered_by`), paged (1-based). A page past the end is empty; `total` tells the
    client where the last page is."""
    return await service.list_builds(
        session,
        pipeline_id=pipeline_id,
        status=status,
        branch=branch,
        triggered_by=triggered_by,
        page=page,
        size=size,
    )


@router.get("/builds/{build_id}", response_model=BuildDetail)
async def get_build(build_id: int, session: ReadSessionDep, _caller: ReaderDep) -> BuildDetail:
    """GetBuild: the build with its jobs (each with `needs` and `steps`), the DAG `edges` and
    the snapshot's `yaml_sha256`. Secret variable values are shown as `***`."""
    return await service.detail(session, build_id)


@router.get("/builds/{build_id}/snapshot", response_model=SnapshotPublic)
async def get_snapshot(
    build_id: int, session: ReadSessionDep, _caller: ReaderDep
) -> SnapshotPublic:
    """The workflow YAML stored when the build was created, and its sha256."""
    snap = await service.snapshot(session, build_id)
    return SnapshotPublic(
        build_id=build_id,
        pipeline_id=snap.pipeline_id,
        workflow_yaml=snap.workflow_yaml,
        yaml_sha256=snap.yaml_sha256,
    )


@router.post("/builds/{build_id}/cancel", status_code=202, response_model=BuildDetail)
async def cancel_build(
    build_id: int, db: DbDep, scheduler: SchedulerDep, caller: WriterDep
) -> BuildDetail:
    """CancelBuild: a queued build is cancelled at once. A running build's processes (or
    Kubernetes Jobs) are stopped by the replica running it, which then marks running and pending
    jobs and steps `cancelled`/`skipped` and the build `cancelled`. A finished build: 409."""
    async with db.transaction() as session:
        await service.request_cancel(session, build_id, by=caller.name)
    scheduler.cancel(build_id)
    async with db.read() as session:
        return await service.detail(session, build_id)


@router.post("/builds/{build_id}/retry", status_code=201, response_model=BuildDetail)
async def retry_build(
    build_id: int,
    db: DbDep,
    queue: QueueDep,
    caller: WriterDep,
    body: RetryRequest | None = None,
) -> BuildDetail:
    """A new build from the same snapshot, variables, commit, branch and repo, with `retry_of`
    set and `triggered_by` the caller's token name. Retrying a build that has not finished is a
    409.

    Without a body every job runs again. With `{"failed_only": true}` only the failed, timed
    out, errored and cancelled jobs run again, and with `{"jobs": [...]}` only those; in both
    cases every job that needs them (directly or not) runs too, and the other jobs keep their
    results and logs, copied into the new build with `reused_from` set, as GitHub's "Re-run
    failed jobs" and "Re-run job" do. Nothing to re-run is a 409; an unknown job a 422."""
    partial = body is not None and (body.failed_only or body.jobs is not None)
    async with db.transaction() as session:
        source, yaml_text = await service.retry_source(session, build_id)
        rerun: set[str] | None = None
        if partial:
            assert body is not None
            rerun = await service.rerun_selection(
                session, build_id, failed_only=body.failed_only, jobs=body.jobs
            )
        new = await service.create_build(
            session,
            NewBuild(
                pipeline_id=source.pipeline_id,
                triggered_by=caller.name if caller.name != "anonymous" else source.triggered_by,
                workflow_yaml=yaml_text,
                commit_sha=source.commit_sha,
                branch=source.branch,
                repo_url=source.repo_url,
                variables=source.variables,
                retry_of=build_id,
            ),
        )
        new_id = new.id
        assert new_id is not None
        if rerun is not None:
            await service.reuse_jobs(session, new_id, build_id, rerun)
    await _dispatch(queue, new_id)
    async with db.read() as session:
        return await service.detail(session, new_id)
