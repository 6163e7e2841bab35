"""1. Step overhead: 100 sequential `true` steps in one job, POST until finished, against a bare
loop spawning `bash -eo pipefail -c true` 100 times."""

from __future__ import annotations

import asyncio
import time

from bench._common import (
    Ctx,
    Result,
    client,
    create_build,
    median,
    parse_ts,
    require_success,
    serve,
    wait_finished,
)

NAME = "step_overhead"
BACKENDS = ("postgres", "sqlite")
STEPS = 100


async def bare_loop(steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        proc = await asyncio.create_subprocess_exec("bash", "-eo", "pipefail", "-c", "true")
        if await proc.wait() != 0:
            raise RuntimeError("bash -c true failed")
    return time.perf_counter() - start


async def run(ctx: Ctx, backend: str) -> None:
    rounds = 1 if ctx.quick else 3

    def yaml_of(steps: int) -> str:
        return "jobs:\n  bench:\n    steps:\n" + "      - run: 'true'\n" * steps

    yaml = yaml_of(STEPS)
    async with serve(backend) as (_db, (server,), _tmp), client(server.base) as http:
        await wait_finished(http, (await create_build(http, yaml_of(10)))["id"])  # warm-up
        durations = []
        for _ in range(rounds):
            sent = time.time()
            build = await wait_finished(http, (await create_build(http, yaml))["id"])
            require_success(build)
            durations.append(parse_ts(build["finished_at"]) - sent)
    baselines = [await bare_loop(STEPS) for _ in range(rounds)]
    value, base = median(durations), median(baselines)
    ctx.add(
        Result(
            NAME,
            backend,
            f"{STEPS} steps POST->finished (median of {rounds})",
            value * 1000,
            "ms",
            base * 1000,
            "bare loop",
            "<= 2x",
            value <= 2 * base,
        )
    )
