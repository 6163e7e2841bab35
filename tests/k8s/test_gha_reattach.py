"""The GitHub Actions runtime survives an executor restart on the Kubernetes runner: the replica
that takes the job over rebuilds the job's runtime state (step outputs, $GITHUB_ENV, $GITHUB_PATH)
from the runtime files the steps left in the pod, including those of the step that was running."""

from __future__ import annotations

import signal
from collections.abc import Callable

import httpx

from tests.k8s_emulator.fixture import EmulatorProcess
from tests.support import (
    ServeProcess,
    create,
    job,
    log_text,
    wait_for_build,
    wait_for_output,
    workflow,
)

WORKFLOW = """
jobs:
  build:
    outputs:
      first: ${{ steps.first.outputs.value }}
      long: ${{ steps.long.outputs.mid }}
    steps:
      - id: first
        run: |
          echo "value=before-restart" >> "$GITHUB_OUTPUT"
          echo "FROM_ENV=kept" >> "$GITHUB_ENV"
          mkdir -p "$RUNNER_TEMP/bin"
          printf '#!/bin/sh\\necho tool-on-path\\n' > "$RUNNER_TEMP/bin/mytool"
          chmod +x "$RUNNER_TEMP/bin/mytool"
          echo "$RUNNER_TEMP/bin" >> "$GITHUB_PATH"
          echo "### before" >> "$GITHUB_STEP_SUMMARY"
      - id: long
        run: |
          echo "mid=during-restart" >> "$GITHUB_OUTPUT"
          for i in $(seq 1 30); do echo tick-$i; sleep 0.1; done
      - if: steps.long.outputs.mid == 'during-restart'
        run: |
          echo "first=${{ steps.first.outputs.value }} env=$FROM_ENV/${{ env.FROM_ENV }}"
          mytool
  after:
    needs: build
    steps:
      - run: echo "needs=${{ needs.build.outputs.first }}/${{ needs.build.outputs.long }}"
"""


async def test_runtime_state_is_rebuilt_from_the_pod_after_a_restart(
    serve_factory: Callable[..., ServeProcess], database_url: str, emulator: EmulatorProcess
) -> None:
    env = {
        "DATABASE_URL": database_url,
        "RUNNER": "kubernetes",
        "KUBECONFIG": str(emulator.kubeconfig_path),
        "K8S_NAMESPACE": "ci",
        "K8S_MARKER_SECRET": "test-marker-secret",
        "LEASE_SECONDS": "2",
    }
    a = serve_factory(env, name="a")
    async with httpx.AsyncClient(base_url=f"{a.url}/api/v1", timeout=30) as client:
        body = await create(client, workflow(WORKFLOW))
        await wait_for_output(client, body["id"], "tick-3")
    a.stop(signal.SIGKILL)
    b = serve_factory(env, name="b")
    async with httpx.AsyncClient(base_url=f"{b.url}/api/v1", timeout=30) as client:
        done = await wait_for_build(client, body["id"], timeout=120)
        text = await log_text(client, body["id"])
    assert done["status"] == "success", text
    build = job(done, "build")
    assert [s["status"] for s in build["steps"]] == ["success", "success", "success"]
    assert build["outputs"] == {"first": "before-restart", "long": "during-restart"}
    assert build["steps"][0]["summary"] == "### before\n"
    assert "first=before-restart env=kept/kept" in text
    assert "tool-on-path" in text
    assert "needs=before-restart/during-restart" in text
    assert "took over build" in b.log()
