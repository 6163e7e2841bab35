"""Servers for tests: an ASGI app on a real uvicorn in this process (`uvicorn_server`), and real
`ci-executor serve` processes (`start_serve`, behind the `serve_factory` fixture).

Both fail fast with the server's own error when it cannot start, instead of waiting for the
test's timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

import httpx
import uvicorn
from starlette.types import ASGIApp

from app.serving import UVICORN_OPTIONS

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "app.cli"]
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"  # the machine's RabbitMQ (.ci/run starts it)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Records(logging.Handler):
    """Keeps what uvicorn logs while it starts: the reason when it does not."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter().format(record))


@asynccontextmanager
async def uvicorn_server(
    app: ASGIApp,
    *,
    lifespan: Literal["auto", "on", "off"] = "auto",
    startup_timeout: float = 30.0,
    shutdown_timeout: float = 60.0,
) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a loopback port of this process; yields its base URL.

    The socket is bound here (no race for a free port, and a bind error is ours to raise), and a
    server that stops during startup (a failing lifespan, an exception in serve) fails the test at
    once with what uvicorn logged."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # Served as `ci-executor serve` serves (its protocol, with the blob routes' extensions).
    config = uvicorn.Config(app, log_level="warning", lifespan=lifespan, **UVICORN_OPTIONS)
    server = uvicorn.Server(config)
    records = _Records()
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(records)

    async def serve() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:  # uvicorn exits the process on some startup errors
            raise RuntimeError(f"uvicorn exited ({exc.code})") from None

    task = asyncio.create_task(serve(), name=f"uvicorn :{port}")
    try:
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + startup_timeout
            while not server.started and not task.done() and loop.time() < deadline:
                await asyncio.wait({task}, timeout=0.02)
        finally:
            uvicorn_log.removeHandler(records)
        if not server.started:
            error = task.exception() if task.done() and not task.cancelled() else None
            reason = "stopped during startup" if task.done() else f"not up in {startup_timeout}s"
            logged = "\n".join(records.lines) or "(uvicorn logged nothing)"
            raise AssertionError(f"uvicorn {reason}: {error!r}\n{logged}") from error
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):  # a startup failure was reported above
            await asyncio.wait_for(task, shutdown_timeout)
        sock.close()


@dataclass
class ServeProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_serve(env_overrides: dict[str, str], tmp_path: Path, name: str = "serve") -> ServeProcess:
    """Start `ci-executor serve` with the test's settings and wait until /healthz answers; a
    process that exits first fails at once with its log."""
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "QUEUE_URL": "memory://",
        "API_TOKENS": "",
        "LOG_LEVEL": "INFO",
        **env_overrides,
    }
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [*CLI, "serve"], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = ServeProcess(f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop(signal.SIGKILL)
            raise AssertionError(f"serve did not become healthy:\n{server.log()}")
        time.sleep(0.1)


@contextmanager
def stub_http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A plain HTTP server on a free loopback port in a thread (a stand-in for pipeline_service
    and other peers), answering with `handler`; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
