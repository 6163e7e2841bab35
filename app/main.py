"""The app factory and its lifespan, which owns every background service."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from app.api import artifacts, builds, health, logs, viewer
from app.api.event_stream import EventStreamHandoff
from app.api.limits import RequestGuard
from app.api.openapi import document_responses
from app.config import PROJECT_ROOT, Settings, get_settings
from app.errors import ServiceError, answer
from app.ui import Compress, mount_ui
from app.wiring import running_services

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
    async with running_services(settings) as services:
        app.state.services = services  # read back, typed, by app/api/deps.py
        # What exists now (modules, the ORM's metadata, compiled statements, the services)
        # lives as long as the app: kept out of the cyclic collector's full passes, which
        # otherwise walk it all. One such pass stopped the event loop for 90-110 ms in a
        # burst of 50 builds, 18-28 ms with this (gc callbacks, bench/RESULTS.md).
        # What of it later dies in a reference cycle waits for shutdown (bounded by what exists
        # now). Unfrozen then, so an app stopped in a longer-lived process is collectable.
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()


def _error(status: int, detail: Any) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


class _App(FastAPI):
    """FastAPI with the SSE streams run outside its whole middleware stack, FastAPI's own
    (error, telemetry and body-limit middleware) included: an idle stream then holds none of
    their frames (bench/sse_idle.py; app/api/event_stream.py says why)."""

    def build_middleware_stack(self) -> ASGIApp:
        return EventStreamHandoff(super().build_middleware_stack(), suffix="/logs/stream")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = _App(
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
    app.include_router(artifacts.router, prefix=API_PREFIX)
    app.include_router(artifacts.runtime_router)
    document_responses(app)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _error(*answer(exc, f"{request.method} {request.url.path}"))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return _error(422, errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _error(*answer(exc, f"{request.method} {request.url.path}"))

    app.add_middleware(RequestGuard, settings=settings, exempt=artifacts.BLOB_PATH_PREFIXES)

    app.add_middleware(Compress, exempt=artifacts.BLOB_PATH_PREFIXES)
    mount_ui(app, WEB_DIST)
    return app
