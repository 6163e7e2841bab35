"""`concurrency:` through the HTTP API: GitHub's rules per pipeline (at most one running and one
waiting build or job per group; a newer waiter replaces the older; cancel-in-progress stops
the running one), on SQLite and Postgres. Steps that must keep a group busy wait at a gate the
test opens (tests/services/gates.py)."""

from __future__ import annotations

from typing import Any

import httpx

from app.config import Settings
from tests.services.gates import GATE_STEP, gate_ready, release
from tests.support import create, job, ts, wait_for_build, wait_until, workflow

REPLACED = "Canceling since a higher priority waiting request for '{}' exists"


def build_workflow(group: str, *, gate: bool, cancel: bool = False) -> str:
    step = GATE_STEP if gate else "echo deployed"
    return workflow(
        f"""
        concurrency:
          group: {group}
          cancel-in-progress: {str(cancel).lower()}
        jobs:
          deploy:
            steps:
              - run: {step}
        """
    )


async def get(client: httpx.AsyncClient, build_id: int) -> dict[str, Any]:
    detail: dict[str, Any] = (await client.get(f"/builds/{build_id}")).json()
    return detail


async def waiting(client: httpx.AsyncClient, build_id: int, group: str) -> dict[str, Any]:
    """Wait until the scheduler has seen the build and left it waiting for `group`."""

    async def seen() -> dict[str, Any] | None:
        detail = await get(client, build_id)
        reason = detail["waiting_reason"] or ""
        return detail if f"waiting for concurrency group '{group}'" in reason else None

    detail: dict[str, Any] = await wait_until(seen, f"build {build_id} waiting for {group}")
    return detail


async def test_build_waits_for_its_group_then_runs(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    first = await create(client, build_workflow("deploy", gate=True))
    await gate_ready(settings, first["id"], "deploy")
    second = await create(client, build_workflow("deploy", gate=False))
    assert second["concurrency_group"] == "deploy"
    detail = await waiting(client, second["id"], "deploy")
    assert detail["status"] == "queued"
    assert f"build #{first['number']} is running" in detail["waiting_reason"]
    assert job(detail, "deploy")["status"] == "pending"

    await release(settings, first["id"], "deploy")
    done_first = await wait_for_build(client, first["id"])
    done_second = await wait_for_build(client, second["id"])
    assert (done_first["status"], done_second["status"]) == ("success", "success")
    assert ts(done_second["started_at"]) >= ts(done_first["finished_at"])
    assert done_second["waiting_reason"] is None


async def test_a_newer_waiting_build_replaces_the_older(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    running = await create(client, build_workflow("deploy", gate=True))
    await gate_ready(settings, running["id"], "deploy")
    older = await create(client, build_workflow("deploy", gate=False))
    await waiting(client, older["id"], "deploy")
    newer = await create(client, build_workflow("deploy", gate=False))
    replaced = await wait_for_build(client, older["id"])
    assert replaced["status"] == "cancelled"
    assert replaced["error"] == REPLACED.format("deploy")
    assert replaced["started_at"] is None
    assert [j["status"] for j in replaced["jobs"]] == ["cancelled"]
    await waiting(client, newer["id"], "deploy")

    await release(settings, running["id"], "deploy")
    assert (await wait_for_build(client, running["id"]))["status"] == "success"
    assert (await wait_for_build(client, newer["id"]))["status"] == "success"


async def test_cancel_in_progress_stops_the_running_build(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    running = await create(client, build_workflow("deploy", gate=True, cancel=True))
    await gate_ready(settings, running["id"], "deploy")
    newer = await create(client, build_workflow("deploy", gate=False, cancel=True))
    stopped = await wait_for_build(client, running["id"])
    assert stopped["status"] == "cancelled"
    assert stopped["error"] == REPLACED.format("deploy")
    assert job(stopped, "deploy")["status"] == "cancelled"
    done = await wait_for_build(client, newer["id"])
    assert done["status"] == "success"
    assert ts(done["started_at"]) >= ts(stopped["finished_at"])


async def test_groups_from_expressions_are_per_pipeline_and_case_insensitive(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    text = build_workflow("deploy-${{ github.ref }}-${{ inputs.target }}", gate=True)
    main = await create(client, text, branch="main", event={"inputs": {"target": "PROD"}})
    assert main["concurrency_group"] == "deploy-refs/heads/main-PROD"
    await gate_ready(settings, main["id"], "deploy")
    # Another branch, and the same group in another pipeline: not held, they run now.
    other_branch = await create(client, text, branch="dev", event={"inputs": {"target": "prod"}})
    other_pipeline = await create(
        client, text, branch="main", event={"inputs": {"target": "PROD"}}, pipeline_id="p2"
    )
    await gate_ready(settings, other_branch["id"], "deploy")
    await gate_ready(settings, other_pipeline["id"], "deploy")
    # `prod` and `PROD` are one group (GitHub compares names case-insensitively).
    same = await create(client, text, branch="main", event={"inputs": {"target": "prod"}})
    detail = await waiting(client, same["id"], "deploy-refs/heads/main-prod")
    assert detail["status"] == "queued"
    for build in (main, other_branch, other_pipeline):
        await release(settings, build["id"], "deploy")
    await release(settings, same["id"], "deploy")
    assert (await wait_for_build(client, same["id"]))["status"] == "success"


async def test_a_group_that_cannot_be_evaluated_is_refused_and_nothing_stored(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/builds",
        json={
            "pipeline_id": "p1",
            "triggered_by": "t",
            "workflow_yaml": build_workflow("${{ fromJSON('not json') }}", gate=False),
        },
    )
    assert response.status_code == 422, response.text
    assert "concurrency" in response.text
    assert (await client.get("/builds")).json()["total"] == 0


def job_workflow(*, gate: bool, cancel: bool = False) -> str:
    step = GATE_STEP if gate else "echo deployed"
    return workflow(
        f"""
        jobs:
          prep:
            outputs:
              target: ${{{{ steps.t.outputs.target }}}}
            steps:
              - id: t
                run: echo target=prod >> "$GITHUB_OUTPUT"
          lint:
            steps: [{{run: echo lint}}]
          deploy:
            needs: prep
            concurrency:
              group: deploy-${{{{ needs.prep.outputs.target }}}}
              cancel-in-progress: {str(cancel).lower()}
            steps:
              - run: {step}
        """
    )


async def test_job_groups_hold_one_job_across_builds(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    first = await create(client, job_workflow(gate=True))
    await gate_ready(settings, first["id"], "deploy")
    second = await create(client, job_workflow(gate=False))

    async def deploy_waits() -> dict[str, Any] | None:
        detail = await get(client, second["id"])
        deploy = job(detail, "deploy")
        ready = deploy["waiting_reason"] and job(detail, "lint")["status"] == "success"
        return detail if ready else None

    detail = await wait_until(deploy_waits, "the second deploy job to wait")
    deploy = job(detail, "deploy")
    assert deploy["status"] == "pending"
    assert deploy["concurrency_group"] == "deploy-prod"
    assert f"job 'deploy' of build #{first['number']} is running" in deploy["waiting_reason"]
    assert detail["status"] == "running"  # the build runs; only the job waits

    await release(settings, first["id"], "deploy")
    done_first = await wait_for_build(client, first["id"])
    done = await wait_for_build(client, second["id"])
    assert (done_first["status"], done["status"]) == ("success", "success")
    assert ts(job(done, "deploy")["started_at"]) >= ts(job(done_first, "deploy")["finished_at"])


async def test_job_cancel_in_progress_stops_the_other_builds_job(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    first = await create(client, job_workflow(gate=True, cancel=True))
    await gate_ready(settings, first["id"], "deploy")
    second = await create(client, job_workflow(gate=False, cancel=True))
    stopped = await wait_for_build(client, first["id"])
    assert stopped["status"] == "cancelled"
    assert job(stopped, "deploy")["status"] == "cancelled"
    assert job(stopped, "deploy")["error"] == REPLACED.format("deploy-prod")
    assert job(stopped, "lint")["status"] == "success"
    done = await wait_for_build(client, second["id"])
    assert done["status"] == "success"


async def test_a_job_in_its_own_builds_group_is_cancelled_as_a_deadlock(
    client: httpx.AsyncClient,
) -> None:
    created = await create(
        client,
        workflow(
            """
            concurrency: release
            jobs:
              ship:
                concurrency: Release
                steps: [{run: echo never}]
            """
        ),
    )
    done = await wait_for_build(client, created["id"])
    assert done["status"] == "cancelled"
    assert "a deadlock for concurrency group 'Release'" in job(done, "ship")["error"]


async def test_a_newer_waiting_job_replaces_the_older(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    running = await create(client, job_workflow(gate=True))
    await gate_ready(settings, running["id"], "deploy")

    async def deploy_waiting(build_id: int) -> dict[str, Any]:
        async def seen() -> dict[str, Any] | None:
            detail = await get(client, build_id)
            return detail if job(detail, "deploy")["waiting_reason"] else None

        detail: dict[str, Any] = await wait_until(seen, f"deploy of build {build_id} waiting")
        return detail

    older = await create(client, job_workflow(gate=False))
    await deploy_waiting(older["id"])
    newer = await create(client, job_workflow(gate=False))
    await deploy_waiting(newer["id"])
    replaced = await wait_for_build(client, older["id"])
    assert replaced["status"] == "cancelled"
    assert job(replaced, "deploy")["status"] == "cancelled"
    assert job(replaced, "deploy")["error"] == REPLACED.format("deploy-prod")
    assert job(replaced, "deploy")["started_at"] is None
    assert job(replaced, "lint")["status"] == "success"

    await release(settings, running["id"], "deploy")
    assert (await wait_for_build(client, running["id"]))["status"] == "success"
    assert (await wait_for_build(client, newer["id"]))["status"] == "success"


async def test_matrix_jobs_in_one_group_run_one_at_a_time(client: httpx.AsyncClient) -> None:
    created = await create(
        client,
        workflow(
            """
            jobs:
              each:
                strategy:
                  matrix:
                    n: [1, 2]
                concurrency: serial-${{ strategy.job-total }}
                steps:
                  - run: echo "n=${{ matrix.n }}"
              free:
                strategy:
                  matrix:
                    n: [1, 2]
                concurrency: own-${{ matrix.n }}
                steps: [{run: echo free}]
            """
        ),
    )
    done = await wait_for_build(client, created["id"])
    assert done["status"] == "success", done
    first, second = sorted(
        (job(done, name) for name in ("each (1)", "each (2)")), key=lambda j: j["started_at"]
    )
    assert first["concurrency_group"] == second["concurrency_group"] == "serial-2"
    assert ts(second["started_at"]) >= ts(first["finished_at"])
    assert {job(done, f"free ({n})")["concurrency_group"] for n in (1, 2)} == {"own-1", "own-2"}
