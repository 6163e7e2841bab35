"""8. Idle SSE subscribers: 1,000 clients follow the live log of builds whose step waits (no
output), as browser tabs left open on a running build do. Reports the serve process's memory per
subscriber (VmRSS with the clients connected minus before, divided by their number) and the p99
of GET /healthz with them connected against the same p99 before they connected (same server,
same run). The clients are raw asyncio sockets (cheap: they share the two cores with the server),
all connecting at once; each must have received its response headers and the initial `status`
event before measuring, and the time until all have is reported too (no stream may close early)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from pathlib import Path

import httpx

from bench._common import Ctx, Result, client, create_build, percentile, serve

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


async def run(ctx: Ctx, backend: str) -> None:
    count = 200 if ctx.quick else 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count * 2 + 200
    if soft < want:
        # Raised before the server starts, so it inherits the limit too.
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
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
        events = [asyncio.Event() for _ in range(count)]
        failures: list[str] = []

        async def follow(i: int) -> None:
            try:
                await subscriber(server.port, ids[i % BUILDS], events[i])
            except Exception as exc:  # counted: a storm must not close streams early
                failures.append(f"{type(exc).__name__}: {exc}")
                events[i].set()

        tasks: list[asyncio.Task[None]] = []
        try:
            # All at once (a connect storm: every tab of a dashboard reopening together).
            # Until the SSE reads were gated (RESULTS.md), this exhausted the database pool.
            started = time.perf_counter()
            tasks = [asyncio.create_task(follow(i)) for i in range(count)]
            await asyncio.gather(*(event.wait() for event in events))
            connect_s = time.perf_counter() - started
            await asyncio.sleep(2)  # let the server settle (allocations, first polls)
            after = rss_kib(server.pid)
            busy_p99 = await healthz_p99(server.base)
            after = max(after, rss_kib(server.pid))
        finally:
            for build_id in ids:
                server.go_file(build_id).touch()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
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
            f"GET /healthz p99 with {count} idle subscribers",
            busy_p99,
            "ms",
            idle_p99,
            "p99 with none",
            "<= 2x",
            busy_p99 <= 2 * idle_p99,
        )
    )
