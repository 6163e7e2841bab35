"""Group commit of claims (app/services/claims.py): builds created on this replica and delivered
together are claimed in one transaction, their first jobs started in it, and each still runs
once; a build the batch cannot claim (a concurrency group, cancelled) is decided alone."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.services.test_dispatch_path import ONE_STEP, write_transactions
from tests.support import create, job, wait_for_build, wait_until, workflow

GROUPED = workflow(
    """
    concurrency: batch-group
    jobs:
      build:
        steps:
          - run: echo grouped
    """
)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_concurrent_builds": 8}


async def _stored(client: httpx.AsyncClient, app: Any, texts: list[str]) -> list[int]:
    """Builds created without dispatch, then noted as this replica's create notes the builds it
    dispatches (spec at hand, every job pending): what a burst of creates hands the scheduler."""
    specs = app.state.services.scheduler.specs
    ids = []
    for text in texts:
        build = await create(client, text, dispatch=False)
        specs.note(build["id"], build["yaml_sha256"], {})
        ids.append(build["id"])
    return ids


async def _deliver(app: Any, ids: list[int]) -> None:
    """Delivered at once, as the queue hands out its prefetch: each delivery submits its claim
    before the batch's transaction begins."""
    scheduler = app.state.services.scheduler
    await asyncio.gather(*(scheduler.on_delivery(i) for i in ids))


CLAIM = ["UPDATE BUILDS SET", "UPDATE BUILD_JOBS SET"]


def _statements(transaction: list[str]) -> list[str]:
    return [s for s in transaction if not s.startswith("BEGIN")]


async def test_builds_delivered_together_are_claimed_in_one_transaction(
    app: Any, client: httpx.AsyncClient
) -> None:
    ids = await _stored(client, app, [ONE_STEP] * 4)
    with write_transactions(app) as transactions:
        await _deliver(app, ids)
        details = [await wait_for_build(client, i) for i in ids]
    assert [d["status"] for d in details] == ["success"] * 4, details
    # One claim transaction for the four (one UPDATE of builds, then one of their jobs),
    # where a claim each made four.
    claims = [t for t in transactions if _statements(t)[:2] == CLAIM]
    assert len(claims) == 1, transactions
    # Postgres: the builds' notifications in one statement too.
    rest = _statements(claims[0])[2:]
    assert len(rest) <= 1, claims
    assert all(s.startswith("SELECT PG_NOTIFY") for s in rest), claims
    # Every build's job started in that transaction: before its step, once.
    for detail in details:
        started = job(detail, "build")
        assert started["started_at"] is not None
        assert started["started_at"] <= started["steps"][0]["started_at"]
    slots = app.state.services.scheduler._slots
    await wait_until(lambda: slots._value == 8)


async def test_batch_leaves_grouped_and_cancelled_builds_to_the_single_claim(
    app: Any, client: httpx.AsyncClient
) -> None:
    plain, grouped, cancelled = await _stored(client, app, [ONE_STEP, GROUPED, ONE_STEP])
    response = await client.post(f"/builds/{cancelled}/cancel")
    assert response.status_code == 202, response.text
    await _deliver(app, [plain, grouped, cancelled])
    assert (await wait_for_build(client, plain))["status"] == "success"
    assert (await wait_for_build(client, grouped))["status"] == "success"
    gone = await wait_for_build(client, cancelled)
    assert gone["status"] == "cancelled"
    assert job(gone, "build")["started_at"] is None  # never claimed, never started
    slots = app.state.services.scheduler._slots
    await wait_until(lambda: slots._value == 8)


async def test_an_id_delivered_twice_at_once_runs_once(app: Any, client: httpx.AsyncClient) -> None:
    (build_id,) = await _stored(client, app, [ONE_STEP])
    scheduler = app.state.services.scheduler
    spawned: list[int] = []
    spawn = scheduler._spawn

    def counting(ctx: Any, executor: Any, *, resume: bool) -> None:
        spawned.append(ctx.build_id)
        spawn(ctx, executor, resume=resume)

    scheduler._spawn = counting
    await _deliver(app, [build_id, build_id])
    detail = await wait_for_build(client, build_id)
    assert detail["status"] == "success"
    assert spawned == [build_id]
    await wait_until(lambda: scheduler._slots._value == 8)
