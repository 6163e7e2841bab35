"""The service's parts, built in one place.

`running_core` starts what runs builds (database, metrics, live hub, log writer, runner); it is all
`ci-executor run` needs. `running_services` adds what serves them (pipeline client, queue,
scheduler, the Postgres listener) and is what the app's lifespan holds. Both are async context
managers: leaving one stops its parts in reverse order of starting. The routes reach the parts
through the typed dependencies in `app/api/deps.py`, which read the one `Services` the lifespan
stored on `app.state.services`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, fields
from typing import Any

from sqlmodel import col, select

from app.actions.support import ActionSupport
from app.config import Settings
from app.db import POSTGRES_POOL, Database, GroupCommit
from app.installation import read_installation_id
from app.logs.hub import LiveHub
from app.logs.masking import Masker
from app.logs.writer import LogWriter
from app.metrics import Metrics
from app.models import Build, BuildStatus
from app.queue import create_queue
from app.queue.base import BuildQueue
from app.runners import create_runner
from app.runners.base import Runner
from app.secrets import SecretBox, SecretsPurger, load_secret_box
from app.services.notify import PgListener, asyncpg_dsn, notify_payloads
from app.services.pipelines import PipelineClient
from app.services.reporting import BuildContext
from app.services.scheduler import Scheduler


@dataclass(frozen=True)
class Core:
    """What runs builds: the same parts for the server and for `ci-executor run`."""

    settings: Settings
    db: Database
    metrics: Metrics
    hub: LiveHub
    writer: LogWriter
    runner: Runner
    secret_box: SecretBox | None  # seals build secrets (app/secrets.py); None: no key here
    # Built once: the fetcher resolves its cache directory (a realpath, one lstat per path
    # component), which per build cost 6 % of the event loop in a 50-build burst.
    actions: ActionSupport

    def parts(self) -> dict[str, Any]:
        """The core's parts by field name: a Services is built from them plus its own."""
        return {f.name: getattr(self, f.name) for f in fields(Core)}

    def build_context(self, build_id: int) -> BuildContext:
        """What the executor needs to run one build with these parts."""
        return BuildContext(
            build_id=build_id,
            db=self.db,
            writer=self.writer,
            runner=self.runner,
            metrics=self.metrics,
            max_jobs=self.settings.max_concurrent_jobs,
            # The service's own credentials never reach a build log, whatever a step can read.
            masker=Masker(self.settings.service_secrets),
            secret_box=self.secret_box,
            actions=self.actions,
        )


@dataclass(frozen=True)
class Services(Core):
    """The whole service: the core plus the API's and the queue consumer's parts."""

    pipelines: PipelineClient
    queue: BuildQueue
    scheduler: Scheduler
    listener: PgListener | None  # only on Postgres (cross-replica NOTIFY)
    creates: GroupCommit  # POST /builds' transactions (services.builds.submit)


# The most connections the default Postgres pool keeps (and as many again on overflow), so that
# a replica running hundreds of builds does not take hundreds of Postgres connections unasked.
POOL_MOST = 50


def pool_size(settings: Settings) -> int | None:
    """DB_POOL_SIZE; unset (0) on Postgres, one connection kept per build this replica runs at
    once, within POSTGRES_POOL..POOL_MOST. Builds that start together commit their steps' starts
    together, one connection each: with 50 builds on a pool of 20 (+ 20 overflow), ~20
    connections were opened and closed again on every burst (2.4 ms of the event loop's CPU
    each and a Postgres backend started each; bench/RESULTS.md). None: the database module's
    default (SQLite)."""
    if settings.db_pool_size:
        return settings.db_pool_size
    if settings.database_url.startswith("sqlite"):
        return None
    return min(POOL_MOST, max(POSTGRES_POOL, settings.max_concurrent_builds))


async def _start_core(
    stack: AsyncExitStack, settings: Settings, *, hub_queue_size: int | None = None
) -> Core:
    db = Database(settings.database_url, pool_size(settings), settings.db_pool_timeout_seconds)
    stack.push_async_callback(db.dispose)
    metrics = Metrics()
    # SSE streams read the database through half the pool at most, and queue for it rather than
    # time out: a connect storm never starves the writer and the API, nor fails a stream.
    hub = LiveHub(
        hub_queue_size or settings.sse_queue_size, stream_reads=max(1, db.pool_capacity // 2)
    )
    db.sinks.append(hub.publish_many)
    metrics.sse_subscribers.set_function(lambda: hub.subscriber_count)
    writer = LogWriter(
        db,
        metrics,
        flush_interval=settings.log_flush_interval_ms / 1000,
        chunk_max_bytes=settings.log_chunk_max_bytes,
    )
    await writer.start()
    stack.push_async_callback(writer.stop)
    database_id = await read_installation_id(db) if settings.runner == "kubernetes" else None
    runner = create_runner(settings, database_id=database_id)
    await runner.start()
    stack.push_async_callback(runner.stop)
    secret_box = await asyncio.to_thread(load_secret_box, settings)
    return Core(
        settings=settings,
        db=db,
        metrics=metrics,
        hub=hub,
        writer=writer,
        runner=runner,
        secret_box=secret_box,
        actions=ActionSupport.from_settings(settings),
    )


@asynccontextmanager
async def running_core(
    settings: Settings, *, hub_queue_size: int | None = None
) -> AsyncIterator[Core]:
    """Start the parts that run builds. `hub_queue_size` overrides SSE_QUEUE_SIZE for a caller
    whose one subscriber must never lag (`ci-executor run` prints every line)."""
    async with AsyncExitStack() as stack:
        yield await _start_core(stack, settings, hub_queue_size=hub_queue_size)


@asynccontextmanager
async def running_services(settings: Settings) -> AsyncIterator[Services]:
    """Start every part of the service, as the app's lifespan holds them."""
    async with AsyncExitStack() as stack:
        core = await _start_core(stack, settings)
        pipelines = PipelineClient(
            settings.pipeline_service_url,
            yaml_field=settings.pipeline_yaml_field,
            timeout=settings.pipeline_service_timeout_seconds,
        )
        stack.push_async_callback(pipelines.close)
        await sweep_orphans(core.runner, core.db)
        queue = create_queue(
            settings.queue_url,
            queue_name=settings.queue_name,
            prefetch=settings.max_concurrent_builds,
            max_deliveries=settings.queue_max_deliveries,
        )
        purger = SecretsPurger(
            core.db,
            retention_days=settings.secrets_retention_days,
            interval_seconds=settings.secrets_purge_interval_seconds,
        )
        await purger.start()
        stack.push_async_callback(purger.stop)
        scheduler = Scheduler(core, queue)
        core.db.sinks.append(scheduler.on_events)
        await scheduler.start()
        stack.push_async_callback(scheduler.stop)
        listener = None
        if not core.db.is_sqlite:
            core.db.notify = lambda events: notify_payloads(events, scheduler.owner)
            listener = PgListener(
                asyncpg_dsn(settings.database_url),
                sender=scheduler.owner,
                hub=core.hub,
                on_cancel=scheduler.cancel,
            )
            await listener.start()
            stack.push_async_callback(listener.stop)
        yield Services(
            **core.parts(),
            pipelines=pipelines,
            queue=queue,
            scheduler=scheduler,
            listener=listener,
            creates=GroupCommit(core.db),
        )


async def sweep_orphans(runner: Runner, db: Database) -> list[str]:
    """Let the runner delete what finished builds left behind (Kubernetes Jobs, Secrets)."""

    async def finished(ids: list[int]) -> set[int]:
        async with db.read() as session:
            rows = await session.exec(
                select(Build.id).where(
                    col(Build.id).in_(ids),
                    col(Build.status).not_in([BuildStatus.queued, BuildStatus.running]),
                )
            )
            return {i for i in rows.all() if i is not None}

    return await runner.sweep_orphans(finished)
