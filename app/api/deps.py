"""Typed dependencies: what routes need, read from the one `Services` container the lifespan
stored on `app.state.services` (built by `app/wiring.py`)."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from app.config import Settings
from app.db import Database
from app.logs.hub import LiveHub
from app.metrics import Metrics
from app.queue.base import BuildQueue
from app.services.pipelines import PipelineClient
from app.services.scheduler import Scheduler
from app.wiring import Services


async def get_services(request: Request) -> Services:
    # Every dependency here is `async def` though none awaits: FastAPI runs a plain `def`
    # dependency in a worker thread, a thread handoff per dependency per request.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def app_settings(services: ServicesDep) -> Settings:
    """The running app's settings (not `app.config.get_settings`, which reads the environment)."""
    return services.settings


async def get_db(services: ServicesDep) -> Database:
    return services.db


async def get_hub(services: ServicesDep) -> LiveHub:
    return services.hub


async def get_queue(services: ServicesDep) -> BuildQueue:
    return services.queue


async def get_scheduler(services: ServicesDep) -> Scheduler:
    return services.scheduler


async def get_metrics(services: ServicesDep) -> Metrics:
    return services.metrics


async def get_pipelines(services: ServicesDep) -> PipelineClient:
    return services.pipelines


SettingsDep = Annotated[Settings, Depends(app_settings)]
DbDep = Annotated[Database, Depends(get_db)]
HubDep = Annotated[LiveHub, Depends(get_hub)]
QueueDep = Annotated[BuildQueue, Depends(get_queue)]
SchedulerDep = Annotated[Scheduler, Depends(get_scheduler)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
PipelinesDep = Annotated[PipelineClient, Depends(get_pipelines)]


async def get_read_session(db: DbDep) -> AsyncIterator[AsyncSession]:
    """A read-only session for GET routes (no write lock on SQLite)."""
    async with db.read() as session:
        yield session


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]


@dataclass(frozen=True)
class Caller:
    name: str
    role: str


def _authenticate(request: Request, settings: Settings) -> Caller:
    tokens = settings.tokens
    if not tokens:
        return Caller(name="anonymous", role="write")
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise HTTPException(
            401, "missing bearer token", headers={"WWW-Authenticate": 'Bearer realm="ci-executor"'}
        )
    match = None
    for token in tokens:  # no early exit: the time taken does not tell which token nearly matched
        if hmac.compare_digest(token.token.encode(), presented.encode()):
            match = token
    if match is None:
        raise HTTPException(
            401, "invalid bearer token", headers={"WWW-Authenticate": 'Bearer realm="ci-executor"'}
        )
    return Caller(name=match.name, role=match.role)


async def require_read(request: Request, settings: SettingsDep) -> Caller:
    return _authenticate(request, settings)


async def require_write(request: Request, settings: SettingsDep) -> Caller:
    caller = _authenticate(request, settings)
    if caller.role != "write":
        raise HTTPException(403, f"token '{caller.name}' is read-only")
    return caller


ReaderDep = Annotated[Caller, Depends(require_read)]
WriterDep = Annotated[Caller, Depends(require_write)]
