"""Typed dependencies: what routes need, read from app.state (set up by the lifespan)."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from app.config import Settings
from app.db import Database
from app.logs.hub import LiveHub
from app.metrics import Metrics
from app.queue.base import BuildQueue
from app.services.pipelines import PipelineClient
from app.services.scheduler import Scheduler


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: committed when the route returns, rolled back on error."""
    async with get_db(request).transaction() as session:
        yield session


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A read-only session for GET routes (no write lock on SQLite)."""
    async with get_db(request).read() as session:
        yield session


@dataclass(frozen=True)
class Caller:
    name: str
    role: str


def _authenticate(request: Request) -> Caller:
    tokens = get_settings(request).tokens
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


def require_read(request: Request) -> Caller:
    return _authenticate(request)


def require_write(request: Request) -> Caller:
    caller = _authenticate(request)
    if caller.role != "write":
        raise HTTPException(403, f"token '{caller.name}' is read-only")
    return caller


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]
ReaderDep = Annotated[Caller, Depends(require_read)]
WriterDep = Annotated[Caller, Depends(require_write)]


def _state(name: str) -> Callable[[Request], Any]:
    """A dependency returning one of the objects the lifespan put on app.state."""

    def dep(request: Request) -> Any:
        return getattr(request.app.state, name)

    return dep


HubDep = Annotated[LiveHub, Depends(_state("hub"))]
QueueDep = Annotated[BuildQueue, Depends(_state("queue"))]
SchedulerDep = Annotated[Scheduler, Depends(_state("scheduler"))]
MetricsDep = Annotated[Metrics, Depends(_state("metrics"))]
PipelinesDep = Annotated[PipelineClient, Depends(_state("pipelines"))]
