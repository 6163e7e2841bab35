"""6. Throughput on RabbitMQ + Postgres: 1,000 builds of 3 `true` steps, with 1 replica and with
2 replicas of `serve` sharing one database and a unique queue. The builds are created with
`dispatch: false` (10 POSTs in flight, spread over the replicas), then their ids are published
straight to the queue (persistent), as pipeline_service does. Reports builds/s (first publish
until the last build finished), p50/p99 queue-to-start, 5xx answers and builds left unfinished
("stuck") after a generous deadline. The 1-replica run is the baseline of the 2-replica one, so
the ratio is the scaling factor."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import aio_pika
import asyncpg
import httpx

from bench._common import AMQP_URL, Ctx, Database, Result, client, percentile, serve

NAME = "amqp_dispatch"
BACKENDS = ("postgres",)
YAML = "jobs:\n  bench:\n    steps:\n" + "      - run: 'true'\n" * 3
SLOTS = "10"  # MAX_CONCURRENT_BUILDS per replica (also the prefetch)


async def create_many(bases: list[str], count: int) -> tuple[list[int], int]:
    """POST `count` builds, 10 at a time, spread over the replicas: (ids, 5xx answers)."""
    ids: list[int] = []
    errors = 0
    clients = [client(base, connections=10) for base in bases]
    sem = asyncio.Semaphore(10)

    async def one(i: int) -> None:
        nonlocal errors
        async with sem:
            response = await clients[i % len(clients)].post(
                "/api/v1/builds",
                json={
                    "pipeline_id": "bench",
                    "triggered_by": "bench",
                    "workflow_yaml": YAML,
                    "dispatch": False,
                },
            )
            if response.status_code >= 500:
                errors += 1
                return
            response.raise_for_status()
            ids.append(int(response.json()["id"]))

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        for http in clients:
            await http.aclose()
    return ids, errors


async def wait_all(db: Database, ids: list[int], timeout: float) -> tuple[list[Any], int, int]:
    """Rows of the builds once all finished (or at the deadline): (rows, stuck, not success)."""
    conn = await asyncpg.connect(db.raw)
    try:
        deadline = time.monotonic() + timeout
        while True:
            rows = await conn.fetch(
                "SELECT id, status, started_at, finished_at FROM builds "
                "WHERE id = ANY($1::bigint[])",
                ids,
            )
            stuck = sum(1 for r in rows if r["status"] in ("queued", "running"))
            if not stuck or time.monotonic() > deadline:
                failed = sum(1 for r in rows if r["status"] not in ("queued", "running", "success"))
                return rows, stuck, failed
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def _health_errors(bases: list[str]) -> int:
    errors = 0
    async with httpx.AsyncClient(timeout=10) as http:
        for base in bases:
            if (await http.get(f"{base}/healthz")).status_code >= 500:
                errors += 1
    return errors


async def amqp_run(count: int, replicas: int) -> dict[str, Any]:
    queue = f"bench.{secrets.token_hex(4)}"
    env = {"QUEUE_URL": AMQP_URL, "QUEUE_NAME": queue, "MAX_CONCURRENT_BUILDS": SLOTS}
    published: dict[int, float] = {}
    try:
        async with serve("postgres", replicas=replicas, **env) as (db, servers, _tmp):
            bases = [s.base for s in servers]
            ids, errors = await create_many(bases, count)
            connection = await aio_pika.connect(AMQP_URL)
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
            rows, stuck, failed = await wait_all(db, ids, timeout=max(300, count))
            errors += await _health_errors(bases)
    finally:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            for name in (queue, f"{queue}.dlq"):
                try:
                    await channel.queue_delete(name)
                except aio_pika.exceptions.AMQPError:
                    channel = await connection.channel()
    done = [r for r in rows if r["finished_at"] is not None and r["started_at"] is not None]
    first = min(published.values())
    last = max(r["finished_at"].timestamp() for r in done)
    return {
        "rate": len(done) / (last - first),
        "latencies": [r["started_at"].timestamp() - published[r["id"]] for r in done],
        "errors": errors,
        "stuck": stuck,
        "failed": failed,
    }


async def run(ctx: Ctx, backend: str) -> None:
    count = 60 if ctx.quick else 1000
    one = await amqp_run(count, 1)
    two = await amqp_run(count, 2)
    for label, res in (("1 replica", one), ("2 replicas", two)):
        ok = res["errors"] == 0 and res["stuck"] == 0 and res["failed"] == 0
        ctx.add(
            Result(
                NAME,
                backend,
                f"throughput, {count} builds of 3 steps, {label} (RabbitMQ)",
                res["rate"],
                "builds/s",
                one["rate"],
                "1 replica",
                "no 5xx, none stuck",
                ok,
                note=(
                    f"5xx {res['errors']}, stuck {res['stuck']}, failed {res['failed']}, "
                    f"queue->start p50 {percentile(res['latencies'], 50) * 1000:.0f} ms "
                    f"p99 {percentile(res['latencies'], 99) * 1000:.0f} ms, "
                    f"MAX_CONCURRENT_BUILDS={SLOTS} per replica"
                ),
            )
        )
