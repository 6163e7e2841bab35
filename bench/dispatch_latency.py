"""3. Dispatch latency: 50 concurrent POSTs of a one-step build; p50/p99 from the moment each POST
is sent to its step's `started_at` (server and client share the machine clock). Then one build
alone (each POSTed after the previous finished; median of 20). Baseline: the p50 round trip of
GET /healthz in the same run."""

from __future__ import annotations

import asyncio
import time

import httpx

from bench._common import (
    Ctx,
    Result,
    client,
    create_build,
    median,
    parse_ts,
    percentile,
    require_success,
    serve,
    wait_finished,
)

NAME = "dispatch_latency"
BACKENDS = ("postgres", "sqlite")
ALONE_COUNT = 20
YAML = "jobs:\n  bench:\n    steps:\n      - run: 'true'\n"


async def one(http: httpx.AsyncClient, start: asyncio.Event) -> tuple[float, int]:
    await start.wait()
    sent = time.time()
    build = await create_build(http, YAML)
    return sent, int(build["id"])


async def started_after(http: httpx.AsyncClient, sent: list[tuple[float, int]]) -> list[float]:
    latencies = []
    for when, build_id in sent:
        build = await wait_finished(http, build_id)
        require_success(build)
        latencies.append(parse_ts(build["jobs"][0]["steps"][0]["started_at"]) - when)
    return latencies


async def run(ctx: Ctx, backend: str) -> None:
    count = 50
    alone_count = ALONE_COUNT // 2 if ctx.quick else ALONE_COUNT
    async with (
        serve(backend, MAX_CONCURRENT_BUILDS="50") as (_db, (server,), _tmp),
        client(server.base, connections=count) as http,
    ):
        # Warm up the server's code paths.
        await wait_finished(http, (await create_build(http, YAML))["id"])
        pings = []
        for _ in range(50):
            t0 = time.perf_counter()
            (await http.get("/healthz")).raise_for_status()
            pings.append(time.perf_counter() - t0)
        # Fresh keep-alive connections for the burst (uvicorn drops idle ones after 5 s).
        await asyncio.gather(*(http.get("/healthz") for _ in range(count)))
        start = asyncio.Event()
        tasks = [asyncio.create_task(one(http, start)) for _ in range(count)]
        await asyncio.sleep(0.05)
        start.set()
        latencies = await started_after(http, await asyncio.gather(*tasks))
        # One build at a time: its own path through the service, nothing queued before it.
        alone = []
        for _ in range(alone_count):
            await http.get("/healthz")
            sent = time.time()
            build = await create_build(http, YAML)
            alone.extend(await started_after(http, [(sent, int(build["id"]))]))
    base = median(pings) * 1000
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    ctx.add(
        Result(
            NAME,
            backend,
            f"POST->step started p50 ({count} concurrent)",
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
            f"POST->step started p99 ({count} concurrent)",
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
