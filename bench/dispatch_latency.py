"""3. Dispatch latency: 50 concurrent POSTs of a one-step build; p50/p99 from the moment each POST
is sent to its step's `started_at` (server and client share the machine clock), over the 250
builds of five such bursts (two with --quick). The server's first burst comes before them and
is an info row: its pool opens its connections and its memory is new to the process (on this
VM, a page the host has taken back faults on first use), as for no burst of a server that has
been running. Then one build alone (each POSTed after the previous finished; median of 20).
Baseline: the p50 round trip of GET /healthz in the same run.

The client is `LeanClient` (raw HTTP/1.1 on keep-alive connections), and builds are polled
only where the poll cannot land in the dispatch it measures: the last build of the burst until
it ends, then each; a build alone one poll interval after its POST. With httpx and a poll at
once (before 2026-12-04), the client's CPU (about 1 ms a request) shared the two cores with the
server, and the first poll's detail read shared the event loop with the claim; the figures of
both clients are in bench/RESULTS.md.

Info rows (no target): the CPU the serve process spends, read from /proc around the bursts: its
event-loop thread (one core at most, whatever the machine has) and the whole process with its
steps' processes. The first POSTs' `dispatch: false` creates give the loop's CPU per create
alone. A second burst of builds whose step sleeps gives the loop's CPU per build for the
dispatch phase alone (POST -> first step started, nothing ending meanwhile). 50 creates' loop
CPU is a floor under the burst's p50 (each POST is read, parsed,
written and answered by that one thread, and they all arrive at once); the whole CPU of 50
builds over the machine's cores is a floor under the time the last one can start."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from bench._common import (
    Ctx,
    LeanClient,
    Result,
    median,
    parse_ts,
    percentile,
    require_success,
    serve,
)

NAME = "dispatch_latency"
BACKENDS = ("postgres", "sqlite")
ALONE_COUNT = 20
CREATES = 20  # `dispatch: false` creates timed for the loop's CPU per create
YAML = "jobs:\n  bench:\n    steps:\n      - run: 'true'\n"
SLEEPING = "jobs:\n  bench:\n    steps:\n      - run: 'sleep 300'\n"
BURSTS = 5  # measured bursts, their latencies pooled; each server's first burst is not one
WINDOW = 2.0  # s after the dispatch-phase burst's POSTs before looking whether all started


def cpu_ms(pid: int, *, thread: bool = False, children: bool = False) -> float:
    """CPU time of a process in ms: its main thread alone (the event loop; schedstat's on-CPU
    nanoseconds), or the whole process, with its reaped children's if asked (user + system
    clock ticks from /proc/<pid>/stat)."""
    if thread:
        return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[0]) / 1e6
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks * 1000 / os.sysconf("SC_CLK_TCK")


async def create(http: LeanClient, yaml: str, **extra: Any) -> dict[str, Any]:
    status, body = await http.request(
        "POST",
        "/api/v1/builds",
        {"pipeline_id": "bench", "triggered_by": "bench", "workflow_yaml": yaml, **extra},
    )
    if status != 201:
        raise RuntimeError(f"POST /builds: {status} {body}")
    return dict(body)


async def detail(http: LeanClient, build_id: int) -> dict[str, Any]:
    status, body = await http.request("GET", f"/api/v1/builds/{build_id}")
    if status != 200:
        raise RuntimeError(f"GET /builds/{build_id}: {status} {body}")
    return dict(body)


async def finished(http: LeanClient, build_id: int, interval: float = 0.05) -> dict[str, Any]:
    """The build once it has ended, polled every `interval` s, the first poll after one
    interval: a poll during the dispatch it measures would share the server's one event loop
    with it (a build's detail is about 3 ms of the loop's CPU)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        await asyncio.sleep(interval)
        build = await detail(http, build_id)
        if build["status"] not in ("queued", "running"):
            return build
    raise TimeoutError(f"build {build_id} did not finish in 600 s")


async def healthz(http: LeanClient) -> None:
    status, body = await http.request("GET", "/healthz")
    if status != 200:
        raise RuntimeError(f"GET /healthz: {status} {body}")


async def one(http: LeanClient, start: asyncio.Event) -> tuple[float, int]:
    await start.wait()
    sent = time.time()
    build = await create(http, YAML)
    return sent, int(build["id"])


async def started_after(http: LeanClient, sent: list[tuple[float, int]]) -> list[float]:
    """Each build's POST -> first step started. Only the last build created is polled until it
    ends (builds are dispatched in the order created), then each build is read: polling all
    of them meanwhile would add the observer's GETs to the burst it measures."""
    await finished(http, max(build_id for _, build_id in sent))
    latencies = []
    for when, build_id in sent:
        build = await finished(http, build_id, interval=0)
        require_success(build)
        latencies.append(parse_ts(build["jobs"][0]["steps"][0]["started_at"]) - when)
    return latencies


async def dispatch_phase_cpu(http: LeanClient, pid: int, count: int) -> float:
    """The event loop's CPU per build for the dispatch phase alone (POST -> first step
    started): `count` POSTs at once of a build whose step sleeps, so nothing ends while it is
    measured; from the POSTs until every step has started (looked at after WINDOW s, then every
    0.2 s: those few polls are counted in), less the idle loop's CPU over as long (measured
    just before). The builds are then cancelled. The 25th build's start shares the one loop
    with at least its own and the 24 earlier builds' dispatch work: x 25 is a floor under p50
    however that work is ordered."""
    idle0, t_idle = cpu_ms(pid, thread=True), time.monotonic()
    await asyncio.sleep(WINDOW)
    idle_rate = (cpu_ms(pid, thread=True) - idle0) / (time.monotonic() - t_idle)
    loop0, t0 = cpu_ms(pid, thread=True), time.monotonic()
    builds = await asyncio.gather(*(create(http, SLEEPING) for _ in range(count)))
    await asyncio.sleep(max(0.0, WINDOW - (time.monotonic() - t0)))
    waiting = [int(build["id"]) for build in builds]
    while waiting:
        if time.monotonic() - t0 > 120:
            raise RuntimeError(f"{len(waiting)} build(s) did not start within 120 s")
        details = [await detail(http, i) for i in waiting]
        waiting = [d["id"] for d in details if d["jobs"][0]["steps"][0]["started_at"] is None]
        if waiting:
            await asyncio.sleep(0.2)
    loop_cpu = cpu_ms(pid, thread=True) - loop0 - idle_rate * (time.monotonic() - t0)
    for build in builds:
        await http.request("POST", f"/api/v1/builds/{build['id']}/cancel")
    for build in builds:
        await finished(http, build["id"], interval=0)
    return loop_cpu / count


async def burst(http: LeanClient, pid: int, count: int) -> tuple[list[float], float, float]:
    """`count` POSTs released together; each build's POST -> first step started, and the
    serve process's CPU meanwhile in ms (its event loop's, and the whole process's with the
    steps' processes)."""
    # Fresh keep-alive connections for the burst (uvicorn drops idle ones after 5 s).
    await asyncio.gather(*(healthz(http) for _ in range(count)))
    loop0, all0 = cpu_ms(pid, thread=True), cpu_ms(pid, children=True)
    start = asyncio.Event()
    tasks = [asyncio.create_task(one(http, start)) for _ in range(count)]
    await asyncio.sleep(0.05)
    start.set()
    latencies = await started_after(http, await asyncio.gather(*tasks))
    return latencies, cpu_ms(pid, thread=True) - loop0, cpu_ms(pid, children=True) - all0


async def run(ctx: Ctx, backend: str) -> None:
    count = 50
    alone_count = ALONE_COUNT // 2 if ctx.quick else ALONE_COUNT
    async with serve(backend, MAX_CONCURRENT_BUILDS="50") as (_db, (server,), _tmp):
        http = LeanClient(server.base, connections=count)
        # Warm up the server's code paths.
        await finished(http, (await create(http, YAML))["id"])
        pings = []
        for _ in range(50):
            t0 = time.perf_counter()
            await healthz(http)
            pings.append(time.perf_counter() - t0)
        # The event loop's CPU per create alone (stored, not dispatched).
        loop0 = cpu_ms(server.pid, thread=True)
        for _ in range(CREATES):
            await create(http, YAML, dispatch=False)
        create_cpu = (cpu_ms(server.pid, thread=True) - loop0) / CREATES
        cold, _, _ = await burst(http, server.pid, count)
        latencies, loop_cpu, all_cpu = [], 0.0, 0.0
        bursts = 2 if ctx.quick else BURSTS
        for _ in range(bursts):
            more, loop_ms, all_ms = await burst(http, server.pid, count)
            latencies += more
            loop_cpu += loop_ms / (count * bursts)
            all_cpu += all_ms / (count * bursts)
        dispatch_cpu = await dispatch_phase_cpu(http, server.pid, count)
        # One build at a time: its own path through the service, nothing queued before it.
        alone = []
        loop0 = cpu_ms(server.pid, thread=True)
        for _ in range(alone_count):
            await healthz(http)
            sent = time.time()
            build = await create(http, YAML)
            alone.extend(await started_after(http, [(sent, int(build["id"]))]))
        alone_cpu = (cpu_ms(server.pid, thread=True) - loop0) / alone_count
        await http.aclose()
    base = median(pings) * 1000
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    ctx.add(
        Result(
            NAME,
            backend,
            f"POST->step started p50 ({count} concurrent, {bursts} bursts)",
            p50,
            "ms",
            base,
            "GET /healthz p50",
            "<= 250 ms",
            p50 <= 250,
        )
    )
    ctx.add(
        Result(
            NAME,
            backend,
            f"POST->step started p99 ({count} concurrent, {bursts} bursts)",
            p99,
            "ms",
            base,
            "GET /healthz p50",
            "<= 500 ms",
            p99 <= 500,
        )
    )
    ctx.add(
        Result(
            NAME,
            backend,
            f"one build alone, POST->step started (median of {alone_count})",
            median(alone) * 1000,
            "ms",
            base,
            "GET /healthz p50",
            "<= 15 ms",
            median(alone) * 1000 <= 15,
            note=f"p99 {percentile(alone, 99) * 1000:.0f} ms",
        )
    )
    cores = os.cpu_count() or 1
    for metric, value, note in (
        (
            "the first burst on the fresh server, p50 (info)",
            percentile(cold, 50) * 1000,
            f"p99 {percentile(cold, 99) * 1000:.0f} ms; its pool opens its connections, its "
            "memory is new to the process",
        ),
        (
            "event-loop CPU per create alone (info)",
            create_cpu,
            f"x {count} POSTs = {create_cpu * count:.0f} ms on one thread: a floor under the "
            "burst's p50",
        ),
        (
            "event-loop CPU per build alone, POST -> finished (info)",
            alone_cpu,
            "its polls included; all of it before the next build's POST",
        ),
        (
            f"event-loop CPU per build, dispatch phase only, {count} at once (info)",
            dispatch_cpu,
            f"POST -> first step started, nothing ending meanwhile; x 25 = "
            f"{dispatch_cpu * 25:.0f} ms: a floor under p50 on one event loop",
        ),
        (
            f"event-loop CPU per build, {count} at once (info)",
            loop_cpu,
            f"x {count} = {loop_cpu * count:.0f} ms on one thread (the bench's polls included)",
        ),
        (
            f"serve + steps CPU per build, {count} at once (info)",
            all_cpu,
            f"x {count} / {cores} cores = {all_cpu * count / cores:.0f} ms before the last "
            "build's end at the earliest",
        ),
    ):
        ctx.add(Result(NAME, backend, metric, value, "ms", note=note))
