"""1. Step overhead: N sequential `true` steps in one job, POST until finished, against a bare
loop spawning `bash -eo pipefail -c true` N times in the same run. The target row is N = 100;
the scaling rows (10 / 100 / 1,000 steps) show the cost per step as N grows. The service runs
with its default step isolation (LOCAL_ISOLATION=auto: bubblewrap namespaces where available);
one more row shows the same build with LOCAL_ISOLATION=none, and one the floor of a sandbox per
step: the bare loop with each `bash` in the sandbox the service builds for a step, no service."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from app.runners.sandbox import Sandbox, probe_isolation
from bench._common import (
    ROOT,
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
# The time is the server's finished_at, so polling slowly loses nothing, and a fast poll of a
# 1,000-step build's detail would itself take most of the CPU the build needs.
POLL = {"interval": 0.5}


async def bare_loop(steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        proc = await asyncio.create_subprocess_exec("bash", "-eo", "pipefail", "-c", "true")
        if await proc.wait() != 0:
            raise RuntimeError("bash -c true failed")
    return time.perf_counter() - start


async def sandbox_loop(steps: int) -> float | None:
    """The bare loop through app/runners/sandbox.py: one bubblewrap sandbox per `bash`, with the
    service's argv (namespaces, hidden paths), no service around it. None without bubblewrap."""
    choice = await asyncio.to_thread(probe_isolation, "auto")
    if choice.mode != "namespaces":
        return None
    tmp = Path(tempfile.mkdtemp(prefix="ci-bench-"))
    try:
        workspace = tmp / "ws" / "1" / "bench"
        workspace.mkdir(parents=True)
        sandbox = Sandbox(choice, workspace_root=tmp / "ws", hidden=(ROOT, Path.home()))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        start = time.perf_counter()
        for _ in range(steps):
            proc = await sandbox.spawn(
                ["bash", "-eo", "pipefail", "-c", "true"],
                cwd=workspace,
                env=env,
                workspace=workspace,
                tmpdir=tmp,
                track="bench/",
            )
            assert proc.stdout is not None
            await proc.stdout.read()
            proc.close()
            if await proc.wait() != 0:
                raise RuntimeError("sandboxed bash -c true failed")
        return time.perf_counter() - start
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def yaml_of(steps: int) -> str:
    return "jobs:\n  bench:\n    steps:\n" + "      - run: 'true'\n" * steps


async def run(ctx: Ctx, backend: str) -> None:
    rounds = 1 if ctx.quick else 3
    sizes = (10, 100) if ctx.quick else (10, 100, 1000)
    timings: dict[int, tuple[float, float]] = {}
    async with serve(backend) as (_db, (server,), _tmp), client(server.base) as http:
        await wait_finished(http, (await create_build(http, yaml_of(10)))["id"])  # warm-up
        for steps in sizes:
            durations, baselines = [], []
            for _ in range(rounds if steps <= STEPS else 1):
                # Baseline and build alternate, so both see the same machine load.
                baselines.append(await bare_loop(steps))
                sent = time.time()
                build = await wait_finished(
                    http, (await create_build(http, yaml_of(steps)))["id"], **POLL
                )
                require_success(build)
                durations.append(parse_ts(build["finished_at"]) - sent)
            timings[steps] = (median(durations), median(baselines))
        # The sandbox floor, next to its own bare loop (the same minute's machine load).
        floor_bare = await bare_loop(STEPS)
        floor = await sandbox_loop(STEPS)
    # The same 100 steps without step isolation (LOCAL_ISOLATION=none): what bubblewrap's
    # namespaces cost per step, against the same bare loop.
    async with (
        serve(backend, LOCAL_ISOLATION="none") as (_db, (server,), _tmp),
        client(server.base) as http,
    ):
        await wait_finished(http, (await create_build(http, yaml_of(10)))["id"])  # warm-up
        bare = await bare_loop(STEPS)
        sent = time.time()
        build = await wait_finished(http, (await create_build(http, yaml_of(STEPS)))["id"], **POLL)
        require_success(build)
        plain = parse_ts(build["finished_at"]) - sent
    value, base = timings[STEPS]
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
    ctx.add(
        Result(
            NAME,
            backend,
            f"{STEPS} steps POST->finished, LOCAL_ISOLATION=none (info)",
            plain * 1000,
            "ms",
            bare * 1000,
            "bare loop",
            note=f"isolated (default) {value * 1000:.0f} ms",
        )
    )
    if floor is not None:
        ctx.add(
            Result(
                NAME,
                backend,
                f"{STEPS} sandboxed `bash -c true`, no service: a sandbox per step (info)",
                floor * 1000,
                "ms",
                floor_bare * 1000,
                "bare loop",
                note="bubblewrap with the service's argv, spawned as the service does",
            )
        )
    for steps, (value, base) in timings.items():
        ctx.add(
            Result(
                NAME,
                backend,
                f"scaling: per step at {steps} steps",
                value / steps * 1000,
                "ms",
                base / steps * 1000,
                "bare loop",
            )
        )
