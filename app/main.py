"""The app factory and its lifespan, which owns every background service."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlmodel import col, select
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api import builds, health, logs, viewer
from app.config import PROJECT_ROOT, Settings, get_settings
from app.db import Database
from app.errors import ServiceError
from app.logs.hub import LiveHub
from app.logs.writer import LogWriter
from app.metrics import Metrics
from app.models import Build, BuildStatus
from app.queue import create_queue
from app.runners import create_runner
from app.runners.base import Runner
from app.services.notify import PgListener, asyncpg_dsn, notify_payloads
from app.services.pipelines import PipelineClient
from app.services.scheduler import Scheduler
from app.ui import Compress, mount_ui

log = logging.getLogger(__name__)
WEB_DIST = PROJECT_ROOT / "web" / "dist"
API_PREFIX = "/api/v1"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if not settings.tokens:
        log.warning(
            "API_TOKENS is empty: the API is served WITHOUT authentication (bound to %s)",
            settings.host,
        )
    async with AsyncExitStack() as stack:
        db = Database(settings.database_url)
        stack.push_async_callback(db.dispose)
        metrics = Metrics()
        hub = LiveHub(settings.sse_queue_size)
        db.sinks.append(hub.publish_many)
        metrics.sse_subscribers.set_function(lambda: hub.subscriber_count)
        pipelines = PipelineClient(
            settings.pipeline_service_url,
            yaml_field=settings.pipeline_yaml_field,
            timeout=settings.pipeline_service_timeout_seconds,
        )
        stack.push_async_callback(pipelines.close)
        writer = LogWriter(
            db,
            metrics,
            flush_interval=settings.log_flush_interval_ms / 1000,
            chunk_max_bytes=settings.log_chunk_max_bytes,
        )
        await writer.start()
        stack.push_async_callback(writer.stop)
        runner = create_runner(settings)
        await runner.start()
        stack.push_async_callback(runner.stop)
        await sweep_orphans(runner, db)
        queue = create_queue(
            settings.queue_url,
            queue_name=settings.queue_name,
            prefetch=settings.max_concurrent_builds,
        )
        scheduler = Scheduler(
            db=db, queue=queue, runner=runner, writer=writer, metrics=metrics, settings=settings
        )
        await scheduler.start()
        stack.push_async_callback(scheduler.stop)
        if not db.is_sqlite:
            db.notify = lambda events: notify_payloads(events, scheduler.owner)
            listener = PgListener(
                asyncpg_dsn(settings.database_url),
                sender=scheduler.owner,
                hub=hub,
                on_cancel=scheduler.cancel,
            )
            await listener.start()
            stack.push_async_callback(listener.stop)
        app.state.db = db
        app.state.metrics = metrics
        app.state.hub = hub
        app.state.pipelines = pipelines
        app.state.writer = writer
        app.state.runner = runner
        app.state.queue = queue
        app.state.scheduler = scheduler
        yield


async def sweep_orphans(runner: Runner, db: Database) -> None:
    """Delete Kubernetes Jobs left behind by builds that are already finished."""
    sweep = getattr(runner, "sweep_orphans", None)
    if sweep is None:
        return

    async def finished(ids: list[int]) -> set[int]:
        async with db.read() as session:
            rows = await session.exec(
                select(Build.id).where(
                    col(Build.id).in_(ids),
                    col(Build.status).not_in([BuildStatus.queued, BuildStatus.running]),
                )
            )
            return {i for i in rows.all() if i is not None}

    await sweep(finished)


def _error(status: int, detail: Any) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="ci-executor",
        version="0.1.0",
        description="The execution plane of the CI system: builds, their DAG of jobs and steps, "
        "and their logs (JSON and SSE).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(builds.router, prefix=API_PREFIX)
    app.include_router(logs.router, prefix=API_PREFIX)
    app.include_router(viewer.router, prefix=API_PREFIX)
    app.include_router(health.router)

    @app.exception_handler(ServiceError)
    async def _service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status_code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return _error(422, errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, _exc: Exception) -> JSONResponse:
        # Logged with its trace here; the client gets no internals.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; see the service log")

    app.add_middleware(BodyLimit, limit=settings.max_workflow_bytes * 2 + 64 * 1024)

    app.add_middleware(Compress)
    mount_ui(app, WEB_DIST)
    return app


class BodyLimit:
    """Refuse oversized request bodies up front (413) by their Content-Length. Plain ASGI: a
    BaseHTTPMiddleware would add a task and a queue to every request, SSE streams included."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                    response = _error(413, f"request body larger than {self.limit} bytes")
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
