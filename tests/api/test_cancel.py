"""CancelBuild: process trees die, statuses follow, queued and finished builds."""

from __future__ import annotations

import uuid

import httpx

from tests.helpers import create, job, pids_with, wait_for_build, wait_until, workflow


async def test_cancel_kills_grandchildren_and_marks_everything(client: httpx.AsyncClient) -> None:
    # A unique sleep length marks the grandchild's command line, so it can be found from the host
    # whether or not the step runs in its own PID namespace.
    marker = f"300.{uuid.uuid4().int % 10**9}"
    body = await create(
        client,
        workflow(
            f"""
            jobs:
              a:
                steps:
                  - run: |
                      bash -c 'trap "" TERM; sleep {marker}' &
                      wait
                  - run: echo never
              b:
                needs: a
                steps:
                  - run: echo never
            """
        ),
    )
    build_id = body["id"]

    async def started() -> list[int]:
        return pids_with(f"sleep {marker}")

    await wait_until(started)
    response = await client.post(f"/builds/{build_id}/cancel")
    assert response.status_code == 202
    assert response.json()["cancel_requested_at"] is not None
    done = await wait_for_build(client, build_id, timeout=20)
    assert done["status"] == "cancelled"

    async def dead() -> bool:
        return not pids_with(f"sleep {marker}")

    await wait_until(dead, timeout=10)  # the grandchild ignored SIGTERM: SIGKILL got it
    a, b = job(done, "a"), job(done, "b")
    assert a["status"] == "cancelled"
    assert [s["status"] for s in a["steps"]] == ["cancelled", "skipped"]
    assert b["status"] == "cancelled"
    assert [s["status"] for s in b["steps"]] == ["skipped"]
    assert done["finished_at"] is not None
    again = await client.post(f"/builds/{build_id}/cancel")
    assert again.status_code == 409
    assert "already cancelled" in again.json()["detail"]


async def test_cancel_queued_build_at_once(client: httpx.AsyncClient) -> None:
    body = await create(client, "jobs:\n  a:\n    steps:\n      - run: echo x\n", dispatch=False)
    response = await client.post(f"/builds/{body['id']}/cancel")
    assert response.status_code == 202
    detail = response.json()
    assert detail["status"] == "cancelled"
    assert detail["finished_at"] is not None
    assert [j["status"] for j in detail["jobs"]] == ["cancelled"]
    assert [s["status"] for s in detail["jobs"][0]["steps"]] == ["skipped"]


async def test_cancel_finished_build_is_409(client: httpx.AsyncClient) -> None:
    body = await create(client, "jobs:\n  a:\n    steps:\n      - run: echo x\n")
    await wait_for_build(client, body["id"])
    response = await client.post(f"/builds/{body['id']}/cancel")
    assert response.status_code == 409
