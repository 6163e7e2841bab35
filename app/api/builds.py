"""Build routes: create, list, get, snapshot, cancel, retry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api.deps import (
    DbDep,
    QueueDep,
    ReaderDep,
    ReadSessionDep,
    SchedulerDep,
    ServicesDep,
    WriterDep,
)
from app.api.params import (
    BuildIdPath,
    IdempotencyKey,
    PageQuery,
    PipelineIdQuery,
    ShortTextQuery,
    request_sha256,
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
from app.secrets import seal_request
from app.services import builds as service
from app.services import listing
from app.services.create import NewBuild

router = APIRouter(tags=["builds"])


@router.post("/builds", status_code=201, response_model=BuildDetail)
async def create_build(
    body: BuildCreate,
    response: Response,
    caller: WriterDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> BuildDetail:
    """CreateBuild: validate the workflow, store the build with its snapshot, jobs, edges and
    steps (all `queued`/`pending`), and publish its id unless `dispatch` is false.

    Without `workflow_yaml` the pipeline's current YAML is read from pipeline_service.
    An invalid workflow is a 422 whose `detail` lists every problem with `line` and `column`;
    nothing is stored. With an `Idempotency-Key` header, a repeat of a key already used for the
    same pipeline returns the first build (200) instead of creating another.
    """
    # Read from the one container rather than a dependency each: the busiest write route
    # solves three dependencies (the caller's included) instead of six.
    settings, pipelines = services.settings, services.pipelines
    if len(body.variables) > settings.max_variables:
        raise Invalid(f"too many variables: {len(body.variables)} > {settings.max_variables}")
    yaml_text = body.workflow_yaml
    if yaml_text is None:
        yaml_text = await pipelines.workflow_yaml(body.pipeline_id)
    if len(yaml_text.encode()) > settings.max_workflow_bytes:
        raise TooLarge(f"workflow_yaml is larger than {settings.max_workflow_bytes} bytes")
    variables, sealed = seal_request(services.secret_box, body.variables, body.secrets)
    new = NewBuild(
        pipeline_id=body.pipeline_id,
        triggered_by=body.triggered_by or caller.name,
        workflow_yaml=yaml_text,
        commit_sha=body.commit_sha,
        branch=body.branch,
        repo_url=body.repo_url,
        variables=variables,
        secrets_sealed=sealed,
        request_sha256=request_sha256(body),
        dispatch=body.dispatch,
        idempotency_key=idempotency_key,
        event_name=body.event_name,
        event=body.event,
    )
    build, created = await service.submit(
        services.db,
        services.queue,
        new,
        actions=services.actions.fetcher,
        specs=services.scheduler.specs,
        creates=services.creates,
    )
    if not created:
        response.status_code = 200
    return build


@router.get("/builds", response_model=BuildPage)
async def list_builds(
    session: ReadSessionDep,
    _caller: ReaderDep,
    pipeline_id: PipelineIdQuery = None,
    status: BuildStatus | None = None,
    branch: ShortTextQuery = None,
    triggered_by: ShortTextQuery = None,
    page: PageQuery = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    """ListBuilds: newest first, filtered by pipeline, status, branch and actor
    (`triggered_by`), paged (1-based). A page past the end is empty; `total` tells the
    client where the last page is."""
    found = await listing.list_builds(
        session,
        pipeline_id=pipeline_id,
        status=status,
        branch=branch,
        triggered_by=triggered_by,
        page=page,
        size=size,
    )
    # Serialised once, here: returned as a model, FastAPI would validate the page against
    # `response_model` a second time before encoding it (same bytes either way).
    return Response(found.model_dump_json(), media_type="application/json")


@router.get("/builds/{build_id}", response_model=BuildDetail)
async def get_build(
    build_id: BuildIdPath, session: ReadSessionDep, _caller: ReaderDep
) -> BuildDetail:
    """GetBuild: the build with its jobs (each with `needs` and `steps`), the DAG `edges` and
    the snapshot's `yaml_sha256`. Secret variable values are shown as `***`."""
    return await service.detail(session, build_id)


@router.get("/builds/{build_id}/snapshot", response_model=SnapshotPublic)
async def get_snapshot(
    build_id: BuildIdPath, session: ReadSessionDep, _caller: ReaderDep
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
    build_id: BuildIdPath, db: DbDep, scheduler: SchedulerDep, caller: WriterDep
) -> BuildDetail:
    """CancelBuild: a queued build is cancelled at once. A running build's processes (or
    Kubernetes Jobs) are stopped by the replica running it, which then marks running and pending
    jobs and steps `cancelled`/`skipped` and the build `cancelled`. A finished build: 409."""
    return await service.cancel(db, build_id, signal=scheduler.cancel, by=caller.name)


@router.post("/builds/{build_id}/retry", status_code=201, response_model=BuildDetail)
async def retry_build(
    build_id: BuildIdPath,
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
    triggered_by = caller.name if caller.name != "anonymous" else None
    return await service.retry(
        db,
        queue,
        build_id,
        triggered_by=triggered_by,
        failed_only=body.failed_only if body else False,
        jobs=body.jobs if body else None,
    )
