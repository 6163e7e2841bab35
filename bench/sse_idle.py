"""8. Idle SSE subscribers: 1,000 clients follow the live log of builds whose step waits (no
output), as browser tabs left open on a running build do. Reports the serve process's memory per
subscriber (VmRSS with the clients connected minus before, divided by their number) and the p99
of GET /healthz with them connected against the same p99 before they connected (same server,
same run). The clients are raw asyncio sockets (cheap: they share the two cores with the server),
all connecting at once; each must have received its response headers and the initial `status`
event before measuring, and the time until all have is reported too (no stream may close early).

An info row gives the floor: the same clients held open by a bare ASGI app (bench/_serve.py
`bare`: one status frame, then nothing but the server's own task per request) under the same
uvicorn settings. What uvicorn, its protocol and transport objects and the socket cost per
connection is there, not in the service."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench._common import ROOT, Ctx, Result, client, create_build, free_port, percentile, serve

NAME = "sse_idle"
BACKENDS = ("postgres", "sqlite")
BUILDS = 10  # the subscribers are spread over this many running builds


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def healthz_p99(base: str, count: int = 300) -> float:
    times = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        await http.get("/healthz")
        for _ in range(count):
            t0 = time.perf_counter()
            (await http.get("/healthz")).raise_for_status()
            times.append(time.perf_counter() - t0)
    return percentile(times, 99) * 1000


async def subscriber(port: int, build_id: int, ready: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET /api/v1/builds/{build_id}/logs/stream HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        seen = b""
        while b"event: status" not in seen:
            data = await reader.read(4096)
            if not data:
                raise RuntimeError("SSE stream closed early")
            seen += data
        if not seen.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"SSE answered {seen[:60]!r}")
        ready.set()
        while await reader.read(4096):  # pings; stay connected until cancelled
            pass
    finally:
        writer.close()


async def hold(
    port: int, count: int, targets: list[int]
) -> tuple[list[asyncio.Task[None]], list[str]]:
    """`count` subscribers connected at once, each to one of `targets`; returns once every one
    has its headers and first status event (or failed)."""
    events = [asyncio.Event() for _ in range(count)]
    failures: list[str] = []

    async def follow(i: int) -> None:
        try:
            await subscriber(port, targets[i % len(targets)], events[i])
        except Exception as exc:  # counted: a storm must not close streams early
            failures.append(f"{type(exc).__name__}: {exc}")
            events[i].set()

    tasks = [asyncio.create_task(follow(i)) for i in range(count)]
    await asyncio.gather(*(event.wait() for event in events))
    return tasks, failures


async def release(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task


async def floor_kib(count: int) -> float:
    """RSS per connection of the bare streaming app (see the module docstring)."""
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port)}
    argv = [sys.executable, "-m", "bench._serve", "bare"]
    proc = subprocess.Popen(argv, env=env, cwd=ROOT)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    await http.get("/healthz")
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        before = rss_kib(proc.pid)
        tasks, failures = await hold(port, count, [1])
        try:
            await asyncio.sleep(2)
            after = rss_kib(proc.pid)
        finally:
            await release(tasks)
        if failures:
            raise RuntimeError(f"bare stream failed: {failures[0]}")
        return (after - before) / count
    finally:
        proc.kill()  # nothing to shut down gracefully
        proc.wait()


async def run(ctx: Ctx, backend: str) -> None:
    count = 200 if ctx.quick else 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count * 2 + 200
    if soft < want:
        # Raised before the server starts, so it inherits the limit too.
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    if "floor" not in ctx.cache:
        ctx.cache["floor"] = await floor_kib(count)
    async with serve(backend, MAX_CONCURRENT_BUILDS=str(BUILDS)) as (_db, (server,), _tmp):
        yaml = "jobs:\n  idle:\n    steps:\n      - run: while [ ! -e ../go ]; do sleep 0.2; done\n"
        async with client(server.base) as http:
            ids = [int((await create_build(http, yaml))["id"]) for _ in range(BUILDS)]

            async def all_running() -> bool:
                for build_id in ids:
                    body = (await http.get(f"/api/v1/builds/{build_id}")).json()
                    if body["jobs"][0]["steps"][0]["status"] != "running":
                        return False
                return True

            while not await all_running():
                await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        idle_p99 = await healthz_p99(server.base)
        before = rss_kib(server.pid)
        tasks: list[asyncio.Task[None]] = []
        try:
            # All at once (a connect storm: every tab of a dashboard reopening together).
            # Until the SSE reads were gated (RESULTS.md), this exhausted the database pool.
            started = time.perf_counter()
            tasks, failures = await hold(server.port, count, ids)
            connect_s = time.perf_counter() - started
            await asyncio.sleep(2)  # let the server settle (allocations, first polls)
            after = rss_kib(server.pid)
            busy_p99 = await healthz_p99(server.base)
            after = max(after, rss_kib(server.pid))
        finally:
            for build_id in ids:
                server.go_file(build_id).touch()
            await release(tasks)
    ctx.add(
        Result(
            NAME,
            backend,
            f"{count} subscribers connecting at once: all replayed + status",
            connect_s,
            "s",
            target="none closed early",
            passed=not failures,
            note=f"{len(failures)} failed" + (f", first: {failures[0][:80]}" if failures else ""),
        )
    )
    per_sub = (after - before) / count
    ctx.add(
        Result(
            NAME,
            backend,
            f"RSS per idle SSE subscriber ({count} connected)",
            per_sub,
            "KiB",
            target="<= 20 KiB",
            passed=per_sub <= 20,
            note=f"VmRSS {before / 1024:.0f} -> {after / 1024:.0f} MB",
        )
    )
    ctx.add(
        Result(
            NAME,
            backend,
            f"info: RSS per idle connection of a bare ASGI stream, same uvicorn ({count})",
            ctx.cache["floor"],
            "KiB",
            note="the floor: server, protocol, transport and socket; no app code",
        )
    )
    ctx.add(
        Result(
            NAME,
            backend,
            f"GET /healthz p99 with {count} idle subscribers",
            busy_p99,
            "ms",
            idle_p99,
            "p99 with none",
            "<= 2x",
            busy_p99 <= 2 * idle_p99,
        )
    )
