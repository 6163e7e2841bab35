"""Shared fixtures (helpers live in tests/support/).

Every database test runs twice, on SQLite and on Postgres (`TEST_BACKENDS=sqlite` runs the SQLite
half only, see tests/support/backends.py). Each backend's schema is built once
per session from the Alembic migrations into a template; each test then gets its own fresh copy
(a copied SQLite file, or `CREATE DATABASE ... TEMPLATE` on Postgres), so tests never see each
other's rows even though the app commits for real.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.config import Settings
from app.main import create_app
from app.migrate import upgrade
from tests.k8s_emulator.fixture import EmulatorProcess
from tests.support import AMQP_URL, ServeProcess, start_serve, uvicorn_server
from tests.support.backends import enabled_backends, skip_unless_enabled

PG_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_HOST = PG_DSN.rsplit("/", 1)[0].split("://", 1)[1]
TEMPLATE = f"ci_test_template_{os.getpid()}"
BACKENDS = enabled_backends()


def _pg_url(name: str, driver: str = "postgresql+asyncpg") -> str:
    return f"{driver}://{PG_HOST}/{name}"


async def _pg_admin(*sql: str) -> None:
    conn = await asyncpg.connect(PG_DSN)
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{TEMPLATE}"', f'CREATE DATABASE "{TEMPLATE}"'))
    upgrade(_pg_url(TEMPLATE))
    yield TEMPLATE
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)'))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    skip_unless_enabled(backend)
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "ci.db"
        shutil.copyfile(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    template_name: str = request.getfixturevalue("postgres_template")
    name = f"ci_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"'))
    yield _pg_url(name)
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module (or with indirect parametrisation) to tune the app."""
    return {}


@pytest.fixture
def settings(database_url: str, tmp_path: Path, settings_overrides: dict[str, Any]) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "workspace_root": tmp_path / "workspaces",
        "queue_url": "memory://",
        "api_tokens": "",
        "cancel_grace_seconds": 2.0,
        "shutdown_grace_seconds": 1.0,
        "sse_ping_seconds": 15.0,
        "_env_file": None,
    }
    values.update(settings_overrides)
    return Settings(**values)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Any]:
    application = create_app(settings)
    async with LifespanManager(application, startup_timeout=30, shutdown_timeout=60):
        yield application


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1") as c:
        yield c


@pytest.fixture
async def live_url(settings: Settings) -> AsyncIterator[str]:
    """The app served by a real uvicorn on loopback (for SSE over real HTTP)."""
    async with uvicorn_server(create_app(settings), lifespan="on") as url:
        yield url


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def factory(env: dict[str, str], name: str = "serve") -> ServeProcess:
        server = start_serve(env, tmp_path, name)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop(signal.SIGKILL, timeout=10)


@pytest.fixture(scope="session")
def emulator_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """One Kubernetes API emulator process for the whole test session."""
    process = EmulatorProcess.start(tmp_path_factory.mktemp("k8s-emulator"))
    yield process
    process.stop()


@pytest.fixture
def emulator(emulator_process: EmulatorProcess) -> Iterator[EmulatorProcess]:
    """The shared emulator, reset (objects, toggles, call log) after each test."""
    yield emulator_process
    emulator_process.control("reset", {})


@pytest.fixture
def amqp_url() -> str:
    return AMQP_URL


@pytest.fixture
async def queue_name() -> AsyncIterator[str]:
    """A RabbitMQ queue name no other test uses; the queue and its DLQ are deleted afterwards."""
    name = f"test.ci.builds.{uuid.uuid4().hex[:12]}"
    yield name
    connection = await aio_pika.connect(AMQP_URL, timeout=30)
    async with connection:
        channel = await connection.channel()
        for queue in (name, f"{name}.dlq"):
            await channel.queue_delete(queue)
