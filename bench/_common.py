"""Shared machinery: fresh databases, `ci-executor serve` subprocesses, results and timing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CLI = str(VENV_BIN / "ci-executor")
PG_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@dataclass
class Result:
    bench: str
    backend: str
    metric: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    target: str = ""
    passed: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0) or self.baseline is None:
            return None
        return self.value / self.baseline


@dataclass
class Ctx:
    quick: bool
    large: bool = False  # also the biggest sizes (1,000 MB logs, 1M builds): slow here
    results: list[Result] = field(default_factory=list)
    # Measurements shared between a benchmark's backends (e.g. the Buildbot peer, run once).
    cache: dict[str, Any] = field(default_factory=dict)

    def add(self, result: Result) -> None:
        self.results.append(result)
        ratio = f"{result.ratio:.2f}x" if result.ratio is not None else "-"
        base = (
            f"  baseline {fmt(result.baseline)} {result.unit} ({result.baseline_label})"
            if result.baseline is not None
            else ""
        )
        verdict = {True: "PASS", False: "MISS", None: ""}[result.passed]
        target = f"  target {result.target} {verdict}" if result.target else ""
        print(
            f"  [{result.backend}] {result.metric}: {fmt(result.value)} {result.unit}"
            f"{base}  ratio {ratio}{target}" + (f"  ({result.note})" if result.note else ""),
            flush=True,
        )


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile: p99 of 50 samples is the largest, as it should be."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def parse_ts(value: str) -> float:
    """A server timestamp (ISO 8601, UTC) as a Unix time, comparable with time.time()."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- databases ------------------------------------------------------------------------------


@dataclass
class Database:
    backend: str  # "postgres" | "sqlite"
    url: str  # the service's DATABASE_URL
    raw: str  # asyncpg DSN or SQLite file path


@contextlib.asynccontextmanager
async def fresh_database(backend: str, tmp: Path) -> AsyncIterator[Database]:
    if backend == "sqlite":
        path = tmp / "bench.db"
        yield Database("sqlite", f"sqlite+aiosqlite:///{path}", str(path))
        return
    name = f"bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(f"{PG_DSN}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield Database("postgres", f"postgresql+asyncpg://{_pg_auth()}/{name}", f"{PG_DSN}/{name}")
    finally:
        admin = await asyncpg.connect(f"{PG_DSN}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _pg_auth() -> str:
    return PG_DSN.removeprefix("postgresql://")


# --- the service ----------------------------------------------------------------------------


class Server:
    """One `ci-executor serve` process on a free loopback port."""

    def __init__(self, db: Database, tmp: Path, name: str = "serve", **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workdir = tmp / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "DATABASE_URL": db.url,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WORKSPACE_ROOT": str(self.workdir / "ws"),
            "QUEUE_URL": "memory://",
            "LOG_LEVEL": "WARNING",
            "MAX_CONCURRENT_BUILDS": "4",
            "MAX_CONCURRENT_JOBS": "4",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "serve.log"

    def go_file(self, build_id: int) -> Path:
        """A file a step can wait for as `../go` (relative to its job directory): the build's
        workspace is the one place outside its own temp dir an isolated step sees."""
        return Path(self.env["WORKSPACE_ROOT"]) / str(build_id) / "go"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        loop = os.environ.get("BENCH_LOOP")
        argv = [sys.executable, "-m", "bench._serve", loop] if loop else [CLI, "serve"]
        self.proc = subprocess.Popen(
            argv,
            env=self.env,
            cwd=ROOT if loop else self.workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"serve exited: {self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.base}/healthz", timeout=1)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"serve did not become healthy: {self.tail()}")

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            while self.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def migrate(db: Database) -> None:
    subprocess.run(
        [CLI, "migrate"],
        env={**os.environ, "DATABASE_URL": db.url, "LOG_LEVEL": "WARNING"},
        check=True,
        capture_output=True,
    )


@contextlib.asynccontextmanager
async def serve(
    backend: str, replicas: int = 1, **env: str
) -> AsyncIterator[tuple[Database, list[Server], Path]]:
    """A fresh database, migrated, and `replicas` servers on it."""
    tmp = Path(tempfile.mkdtemp(prefix="ci-bench-"))
    try:
        async with fresh_database(backend, tmp) as db:
            await asyncio.to_thread(migrate, db)
            servers = [Server(db, tmp, f"serve{i}", **env) for i in range(replicas)]
            try:
                for server in servers:
                    await server.start()
                yield db, servers, tmp
            except BaseException:
                for server in servers:
                    print(f"--- {server.workdir.name} log tail:\n{server.tail()}", flush=True)
                raise
            finally:
                for server in servers:
                    await server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def client(base: str, connections: int = 20) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base,
        timeout=httpx.Timeout(60.0),
        # Below uvicorn's 5 s keep-alive timeout, so a pooled connection is never one the
        # server has just closed.
        limits=httpx.Limits(
            max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=3
        ),
    )


def workflow(*runs: str, job: str = "bench") -> str:
    """A one-job workflow whose steps are the given shell snippets (literal block scalars)."""
    lines = ["jobs:", f"  {job}:", "    steps:"]
    for run in runs:
        lines.append("      - run: |")
        lines.extend(f"          {line}" for line in run.splitlines())
    return "\n".join(lines) + "\n"


async def create_build(
    http: httpx.AsyncClient, yaml: str, pipeline: str = "bench", **extra: Any
) -> dict[str, Any]:
    response = await http.post(
        "/api/v1/builds",
        json={"pipeline_id": pipeline, "triggered_by": "bench", "workflow_yaml": yaml, **extra},
    )
    if response.status_code != 201:
        raise RuntimeError(f"POST /builds: {response.status_code} {response.text}")
    body: dict[str, Any] = response.json()
    return body


async def wait_finished(
    http: httpx.AsyncClient, build_id: int, timeout: float = 600, interval: float = 0.05
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await http.get(f"/api/v1/builds/{build_id}")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        if body["status"] not in ("queued", "running"):
            return body
        await asyncio.sleep(interval)
    raise TimeoutError(f"build {build_id} did not finish in {timeout} s")


def require_success(build: dict[str, Any]) -> None:
    if build["status"] != "success":
        raise RuntimeError(f"build {build['id']} ended {build['status']}: {build.get('error')}")


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    """`with timer() as t: ...` then t[0] is the elapsed wall time in seconds."""
    out: list[float] = []
    start = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - start)


class LeanClient:
    """HTTP/1.1 with keep-alive over asyncio streams, JSON in and out: for the benchmarks where
    the client's own CPU would be counted against the server.

    Why not httpx there: the bench shares the machine's two cores with the server and its
    steps, and httpx spends about a millisecond of CPU per request in this process (its
    connection pool, header models, event hooks). pipeline_service, the real client, runs on
    another machine. This client writes one prepared request and reads one Content-Length
    answer; it does not follow redirects or read chunked bodies (it refuses them)."""

    def __init__(self, base: str, connections: int = 20) -> None:
        parts = urlsplit(base)
        self.host = parts.netloc
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._slots = asyncio.Semaphore(connections)
        # (reader, writer, last used): uvicorn closes a connection idle for 5 s, so one idle
        # for longer than IDLE is dropped rather than reused.
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    IDLE = 3.0

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(payload)}\r\n"
            + ("Content-Type: application/json\r\n" if body is not None else "")
            + "\r\n"
        ).encode()
        async with self._slots:
            reader, writer = await self._connection()
            try:
                writer.write(head + payload)
                head_bytes = await reader.readuntil(b"\r\n\r\n")
                lines = head_bytes.decode("latin-1").split("\r\n")
                status, size = int(lines[0].split(" ", 2)[1]), 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        size = int(value)
                    elif name.lower() == "transfer-encoding":
                        raise RuntimeError(f"{method} {path}: a chunked answer (not read here)")
                data = await reader.readexactly(size)
            except BaseException:
                writer.close()
                raise
            self._idle.append((reader, writer, time.monotonic()))
        return status, json.loads(data) if data else None

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer, used = self._idle.pop()
            if time.monotonic() - used < self.IDLE:
                return reader, writer
            writer.close()
        return await asyncio.open_connection(*self.address)

    async def aclose(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()
