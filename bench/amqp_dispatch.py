"""6. RabbitMQ dispatch (issue 4): two `serve` replicas on one Postgres database consume a
unique RabbitMQ queue. 200 builds are created with `dispatch: false`, then their ids are
published straight to the queue (persistent), as pipeline_service does. Reports throughput
(builds/s, first publish until the last build finished) and p50/p99 queue-to-start (publish
time -> build started_at). Baseline: one replica with the in-process queue (memory://), the
builds POSTed with `dispatch: true`; its queue-to-start is from the build's `dispatched_at`."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import aio_pika
import asyncpg

from bench._common import AMQP_URL, Ctx, Database, Result, client, create_build, percentile, serve

NAME = "amqp_dispatch"
BACKENDS = ("postgres",)
YAML = "jobs:\n  bench:\n    steps:\n      - run: 'true'\n"
SLOTS = "10"  # MAX_CONCURRENT_BUILDS per replica (also the prefetch)


async def create_many(bases: list[str], count: int, dispatch: bool) -> list[tuple[float, int]]:
    """POST `count` builds, 10 at a time, spread over the replicas; (send time, id) each."""
    out: list[tuple[float, int]] = []
    clients = [client(base, connections=10) for base in bases]
    sem = asyncio.Semaphore(10)

    async def one(i: int) -> None:
        async with sem:
            sent = time.time()
            build = await create_build(clients[i % len(clients)], YAML, dispatch=dispatch)
            out.append((sent, int(build["id"])))

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        for http in clients:
            await http.aclose()
    return out


async def wait_all(db: Database, ids: list[int], timeout: float = 600) -> list[Any]:
    conn = await asyncpg.connect(db.raw)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = await conn.fetch(
                "SELECT id, status, created_at, dispatched_at, started_at, finished_at "
                "FROM builds WHERE id = ANY($1::bigint[])",
                ids,
            )
            if len(rows) == len(ids) and all(
                r["status"] not in ("queued", "running") for r in rows
            ):
                bad = [r["id"] for r in rows if r["status"] != "success"]
                if bad:
                    raise RuntimeError(f"{len(bad)} builds did not succeed, e.g. {bad[:5]}")
                return rows
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise TimeoutError("builds did not all finish")


async def amqp_run(count: int) -> tuple[float, list[float]]:
    queue = f"bench.{secrets.token_hex(4)}"
    env = {"QUEUE_URL": AMQP_URL, "QUEUE_NAME": queue, "MAX_CONCURRENT_BUILDS": SLOTS}
    try:
        async with serve("postgres", replicas=2, **env) as (db, servers, _tmp):
            created = await create_many([s.base for s in servers], count, dispatch=False)
            ids = [build_id for _, build_id in created]
            connection = await aio_pika.connect(AMQP_URL)
            published: dict[int, float] = {}
            async with connection:
                channel = await connection.channel()
                for build_id in ids:
                    published[build_id] = time.time()
                    await channel.default_exchange.publish(
                        aio_pika.Message(
                            str(build_id).encode(),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=queue,
                    )
            rows = await wait_all(db, ids)
    finally:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            for name in (queue, f"{queue}.dlq"):
                try:
                    await channel.queue_delete(name)
                except aio_pika.exceptions.AMQPError:
                    channel = await connection.channel()
    first = min(published.values())
    last = max(r["finished_at"].timestamp() for r in rows)
    latencies = [r["started_at"].timestamp() - published[r["id"]] for r in rows]
    return count / (last - first), latencies


async def memory_run(count: int) -> tuple[float, list[float]]:
    async with serve("postgres", MAX_CONCURRENT_BUILDS=SLOTS) as (db, (server,), _tmp):
        created = await create_many([server.base], count, dispatch=True)
        rows = await wait_all(db, [build_id for _, build_id in created])
    first = min(sent for sent, _ in created)
    last = max(r["finished_at"].timestamp() for r in rows)
    latencies = [
        r["started_at"].timestamp() - (r["dispatched_at"] or r["created_at"]).timestamp()
        for r in rows
    ]
    return count / (last - first), latencies


async def run(ctx: Ctx, backend: str) -> None:
    count = 30 if ctx.quick else 200
    rate, lat = await amqp_run(count)
    base_rate, base_lat = await memory_run(count)
    label = "1 replica memory://"
    ctx.add(
        Result(
            NAME,
            backend,
            f"throughput, {count} builds, 2 replicas",
            rate,
            "builds/s",
            base_rate,
            label,
            note=f"MAX_CONCURRENT_BUILDS={SLOTS} per replica",
        )
    )
    for pct in (50, 99):
        ctx.add(
            Result(
                NAME,
                backend,
                f"queue->start p{pct}",
                percentile(lat, pct) * 1000,
                "ms",
                percentile(base_lat, pct) * 1000,
                label,
            )
        )
