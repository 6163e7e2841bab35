"""1. Step overhead: N sequential `true` steps in one job, POST until finished, against a bare
loop spawning `bash -eo pipefail -c true` N times in the same run. The target row is N = 100;
the scaling rows (10 / 100 / 1,000 steps) show the cost per step as N grows. The service runs
with its default step isolation (LOCAL_ISOLATION=auto: bubblewrap namespaces where available);
one more row shows the same build with LOCAL_ISOLATION=none, one the floor of a sandbox per
step (the bare loop with each `bash` in its own bwrap with the service's argv, no service), and one
the floor of the job sandbox the service now uses: each `bash` spawned by the launcher of one
bwrap, no service."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import asyncpg

from app.runners.sandbox import Sandbox, probe_isolation
from bench._common import (
    ROOT,
    Ctx,
    Database,
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


async def sandbox_loop(steps: int, *, per_job: bool = False) -> float | None:
    """The bare loop through app/runners/sandbox.py: one bubblewrap sandbox per `bash`, with the
    service's argv (namespaces, hidden paths), no service around it; `per_job`: every `bash` in
    one job sandbox, spawned by its launcher (started before the clock). None without bubblewrap
    (or, for `per_job`, with an app/ that has no job sandbox)."""
    choice = await asyncio.to_thread(probe_isolation, "auto")
    if choice.mode != "namespaces":
        return None
    tmp = Path(tempfile.mkdtemp(prefix="ci-bench-"))
    try:
        workspace = tmp / "ws" / "1" / "bench"
        workspace.mkdir(parents=True)
        sandbox = Sandbox(choice, workspace_root=tmp / "ws", hidden=(ROOT, Path.home()))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        if per_job:
            if not hasattr(sandbox, "open_job"):
                return None
            sandbox.open_job(workspace, "bench/", steps + 1)
            warm = await sandbox.spawn(
                ["true"], cwd=workspace, env=env, workspace=workspace, tmpdir=tmp, track="b/"
            )
            await warm.wait()
            warm.close()
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
        if per_job:
            sandbox.close_job(workspace)
        shutil.rmtree(tmp, ignore_errors=True)


async def durable_loop(db: Database, steps: int) -> float:
    """The bare loop with one committed one-row UPDATE before each spawn, on the service's own
    database with its settings (Postgres: synchronous_commit on; SQLite: WAL, synchronous=NORMAL):
    what a step's durable `running` costs, the one write per step a re-attaching replica needs,
    with no service around it."""
    if db.backend == "postgres":
        conn = await asyncpg.connect(db.raw)
        try:
            await conn.execute("CREATE TABLE bench_floor (id int PRIMARY KEY, n int)")
            await conn.execute("INSERT INTO bench_floor VALUES (1, 0)")
            start = time.perf_counter()
            for _ in range(steps):
                await conn.execute("UPDATE bench_floor SET n = n + 1 WHERE id = 1")
                proc = await asyncio.create_subprocess_exec("bash", "-eo", "pipefail", "-c", "true")
                await proc.wait()
            return time.perf_counter() - start
        finally:
            await conn.close()
    lite = sqlite3.connect(db.raw, isolation_level=None)
    try:
        lite.execute("PRAGMA journal_mode=WAL")
        lite.execute("PRAGMA synchronous=NORMAL")
        lite.execute("CREATE TABLE bench_floor (id int PRIMARY KEY, n int)")
        lite.execute("INSERT INTO bench_floor VALUES (1, 0)")
        start = time.perf_counter()
        for _ in range(steps):
            lite.execute("BEGIN IMMEDIATE")
            lite.execute("UPDATE bench_floor SET n = n + 1 WHERE id = 1")
            lite.execute("COMMIT")
            proc = await asyncio.create_subprocess_exec("bash", "-eo", "pipefail", "-c", "true")
            await proc.wait()
        return time.perf_counter() - start
    finally:
        lite.close()


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
        job_floor = await sandbox_loop(STEPS, per_job=True)
    # The same 100 steps without step isolation (LOCAL_ISOLATION=none): what bubblewrap's
    # namespaces cost per step, against the same bare loop.
    async with (
        serve(backend, LOCAL_ISOLATION="none") as (db, (server,), _tmp),
        client(server.base) as http,
    ):
        await wait_finished(http, (await create_build(http, yaml_of(10)))["id"])  # warm-up
        bare = await bare_loop(STEPS)
        durable = await durable_loop(db, STEPS)
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
    ctx.add(
        Result(
            NAME,
            backend,
            f"{STEPS} `bash -c true`, each after one committed UPDATE, no service (info)",
            durable * 1000,
            "ms",
            bare * 1000,
            "bare loop",
            note="the durable step start alone, on the same database",
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
    if job_floor is not None:
        ctx.add(
            Result(
                NAME,
                backend,
                f"{STEPS} `bash -c true` via one job sandbox's launcher, no service (info)",
                job_floor * 1000,
                "ms",
                floor_bare * 1000,
                "bare loop",
                note="one bwrap for the job; each bash spawned by its launcher",
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
