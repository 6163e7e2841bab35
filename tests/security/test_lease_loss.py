"""A replica whose lease renewal updates no row stops working on that build (issue 10, item 5):
after a stall, another replica owns it, and two replicas must never run or finish one build."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col

from app.models import Build
from app.models.types import utcnow
from tests.helpers import create, pids_with, wait_until, workflow


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"lease_seconds": 0.9}


async def test_lost_lease_stops_the_work_and_records_nothing(
    client: httpx.AsyncClient, app: Any
) -> None:
    marker = f"600.{uuid.uuid4().int % 10**9}"
    body = await create(client, workflow(f"jobs:\n  a:\n    steps:\n      - run: sleep {marker}\n"))
    build_id = body["id"]

    async def running() -> bool:
        return bool(pids_with(f"sleep {marker}"))

    await wait_until(running)
    services = app.state.services
    # Another replica took the build over (as after a long stall of this one).
    async with services.db.transaction() as session:
        await session.exec(
            update(Build)
            .where(col(Build.id) == build_id)
            .values(lease_owner="another-replica", lease_expires_at=utcnow())
        )

    async def stopped() -> bool:
        return not pids_with(f"sleep {marker}")

    await wait_until(stopped, timeout=20)
    detail = (await client.get(f"/builds/{build_id}")).json()
    # Nothing was recorded by the replica that lost the build: it is the new owner's to finish.
    assert detail["status"] == "running"
    assert detail["jobs"][0]["status"] == "running"
