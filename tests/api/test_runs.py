"""Running builds on the local runner: DAG order, concurrency, failures, timeouts, env."""

from __future__ import annotations

from pathlib import Path

import httpx

from app.config import Settings
from tests.helpers import create, job, log_text, step_statuses, ts, wait_for_build, workflow


async def test_failed_step_skips_rest_of_job_and_dependents(client: httpx.AsyncClient) -> None:
    body = await create(
        client,
        workflow(
            """
            jobs:
              a:
                steps:
                  - run: echo one
                  - run: exit 7
                  - run: echo never
              b:
                needs: a
                steps:
                  - run: echo never
              c:
                needs: b
                steps:
                  - run: echo never
            """
        ),
    )
    done = await wait_for_build(client, body["id"])
    assert done["status"] == "failed"
    assert step_statuses(done, "a") == [("success", 0), ("failed", 7), ("skipped", None)]
    assert job(done, "a")["status"] == "failed"
    for name in ("b", "c"):
        assert job(done, name)["status"] == "skipped"
        assert step_statuses(done, name) == [("skipped", None)]
    assert "never" not in await log_text(client, body["id"])


async def test_independent_jobs_overlap_and_needs_order(client: httpx.AsyncClient) -> None:
    # Each job waits until the other has started (a file barrier), so they can only both succeed
    # if they run at the same time; timestamps then show the overlap.
    body = await create(
        client,
        workflow(
            """
            jobs:
              left:
                steps:
                  - run: |
                      touch "$CI_WORKSPACE/../left.started"
                      for i in $(seq 200); do
                        [ -e "$CI_WORKSPACE/../right.started" ] && exit 0; sleep 0.05
                      done
                      exit 1
              right:
                steps:
                  - run: |
                      touch "$CI_WORKSPACE/../right.started"
                      for i in $(seq 200); do
                        [ -e "$CI_WORKSPACE/../left.started" ] && exit 0; sleep 0.05
                      done
                      exit 1
              after:
                needs: [left, right]
                steps:
                  - run: echo after
            """
        ),
    )
    done = await wait_for_build(client, body["id"])
    assert done["status"] == "success", done
    left, right, after = job(done, "left"), job(done, "right"), job(done, "after")
    assert ts(left["started_at"]) < ts(right["finished_at"])
    assert ts(right["started_at"]) < ts(left["finished_at"])
    assert ts(after["started_at"]) >= max(ts(left["finished_at"]), ts(right["finished_at"]))


async def test_continue_on_error_and_always(client: httpx.AsyncClient) -> None:
    body = await create(
        client,
        workflow(
            """
            jobs:
              a:
                steps:
                  - run: exit 2
                    continue-on-error: true
                  - run: echo still-runs
                  - run: exit 3
                  - run: echo skipped-by-failure
                  - run: echo cleanup
                    if: always()
            """
        ),
    )
    done = await wait_for_build(client, body["id"])
    assert done["status"] == "failed"
    assert step_statuses(done, "a") == [
        ("failed", 2),
        ("success", 0),
        ("failed", 3),
        ("skipped", None),
        ("success", 0),
    ]


async def test_step_timeout_kills_the_tree(client: httpx.AsyncClient, settings: Settings) -> None:
    body = await create(
        client,
        workflow(
            """
            jobs:
              a:
                steps:
                  - run: (sleep 3; touch "$CI_WORKSPACE/../survivor") & sleep 60
                    timeout-minutes: 0.01
                  - run: echo next
            """
        ),
    )
    done = await wait_for_build(client, body["id"])
    assert step_statuses(done, "a") == [("timed_out", 143), ("skipped", None)]
    assert job(done, "a")["status"] == "timed_out"
    assert done["status"] == "timed_out"
    assert "timed out" in await log_text(client, body["id"])
    # The background grandchild must have died with its group: give it the time it would need.
    waiter = await create(client, "jobs:\n  w:\n    steps:\n      - run: sleep 3.5\n")
    survivor = await wait_for_build(client, waiter["id"])
    assert survivor["status"] == "success"
    assert not (settings.workspace_root / str(body["id"]) / "survivor").exists()


async def test_job_timeout(client: httpx.AsyncClient) -> None:
    body = await create(
        client,
        workflow(
            """
            jobs:
              a:
                timeout-minutes: 0.02
                steps:
                  - run: echo first
                  - run: sleep 60
                  - run: echo never
            """
        ),
    )
    done = await wait_for_build(client, body["id"])
    assert job(done, "a")["status"] == "timed_out"
    assert [s for s, _ in step_statuses(done, "a")] == ["success", "timed_out", "skipped"]
    assert done["status"] == "timed_out"


async def test_working_directory_shell_and_env_layers(client: httpx.AsyncClient) -> None:
    body = await create(
        client,
        workflow(
            """
            env: {LAYER: workflow, W: w}
            jobs:
              a:
                env: {LAYER: job, J: j}
                steps:
                  - run: mkdir -p sub/dir && echo "$0" > shell.txt
                  - run: |
                      echo "pwd=$(basename $(pwd))"
                      echo "layer=$LAYER w=$W j=$J s=$S v=$VAR ci=$CI id=$CI_BUILD_ID" \
                        "job=$CI_JOB_NAME branch=$CI_BRANCH"
                    working-directory: sub/dir
                    env: {LAYER: step, S: s, VAR: from-step}
                  - run: echo "sh-ok" && test -z "${BASH_VERSION:-}"
                    shell: sh
                  - run: echo "bash=${BASH_VERSION:+yes}"
                  - run: echo x
                    working-directory: does/not/exist
            """
        ),
        variables={"VAR": "from-vars"},
        branch="main",
    )
    done = await wait_for_build(client, body["id"])
    text = await log_text(client, body["id"])
    assert "pwd=dir" in text
    assert f"layer=step w=w j=j s=s v=from-vars ci=true id={body['id']} job=a branch=main" in text
    assert "sh-ok" in text
    assert "bash=yes" in text
    assert "working-directory 'does/not/exist' does not exist" in text
    assert [s for s, _ in step_statuses(done, "a")] == [
        "success",
        "success",
        "success",
        "success",
        "failed",
    ]


async def test_variables_are_never_spliced_into_scripts(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    evil = "$(touch pwned) `touch pwned2` ; touch pwned3"
    body = await create(
        client,
        'jobs:\n  a:\n    steps:\n      - run: echo "v=$EVIL"\n',
        variables={"EVIL": evil},
    )
    done = await wait_for_build(client, body["id"])
    assert done["status"] == "success"
    assert f"v={evil}" in await log_text(client, body["id"])
    workspace = next(Path(settings.workspace_root).glob(f"{body['id']}/*"))
    assert not list(workspace.glob("pwned*"))


async def test_max_concurrent_jobs_bounds_parallelism(client: httpx.AsyncClient) -> None:
    jobs = "\n".join(f"  j{i}:\n    steps:\n      - run: sleep 0.2\n" for i in range(6))
    body = await create(client, "jobs:\n" + jobs)
    done = await wait_for_build(client, body["id"])
    assert done["status"] == "success"
    spans = [(ts(j["started_at"]), ts(j["finished_at"])) for j in done["jobs"]]
    # The most jobs running at any job's start is bounded by MAX_CONCURRENT_JOBS (4).
    peak = max(sum(1 for s, f in spans if s <= start < f) for start, _ in spans)
    assert 1 <= peak <= 4
