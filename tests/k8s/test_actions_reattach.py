"""Actions in pods survive an executor restart: the replica that takes the job over replays the
step's session, follows the processes the pod already ran (a JavaScript action's `pre` and the
`main` that was running; a composite action's nested steps) from the stored offsets instead of
starting them again, and reads their runtime files again: `$GITHUB_STATE` still reaches the `post`,
outputs still reach later steps, and no output is lost or repeated."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.actions.repos import Repo
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

SLOW_JS = {
    "js/action.yml": "name: Slow\nruns:\n  using: node20\n  pre: pre.js\n  main: main.js\n"
    "  post: post.js\n",
    "js/pre.js": "require('fs').appendFileSync(process.env.GITHUB_STATE, 'fromPre=p1\\n');\n"
    "console.log('pre-done');\n",
    "js/main.js": """
const fs = require('fs');
let i = 0;
const timer = setInterval(() => {
  i += 1;
  console.log(`js-tick-${i}`);
  if (i === 30) {
    clearInterval(timer);
    fs.appendFileSync(process.env.GITHUB_OUTPUT, 'result=main-done\\n');
    fs.appendFileSync(process.env.GITHUB_STATE, 'fromMain=m2\\n');
  }
}, 100);
""",
    "js/post.js": "const e = process.env;\n"
    "console.log(`post: ${e.STATE_fromPre},${e.STATE_fromMain}`);\n",
    "composite/action.yml": """
name: Steps
outputs:
  second: {value: "${{ steps.two.outputs.v }}"}
runs:
  using: composite
  steps:
    - id: one
      run: echo "v=first" >> "$GITHUB_OUTPUT"; echo nested-one-done
      shell: sh
    - id: two
      run: |
        for i in $(seq 1 20); do echo c-tick-$i; sleep 0.1; done
        echo "v=after-${{ steps.one.outputs.v }}" >> "$GITHUB_OUTPUT"
      shell: sh
""",
}

WORKFLOW = """
jobs:
  a:
    steps:
      - id: s
        uses: acme/slow/js@v1
      - id: c
        uses: acme/slow/composite@v1
      - run: echo "out=${{ steps.s.outputs.result }} second=${{ steps.c.outputs.second }}"
"""


async def test_actions_are_followed_on_after_a_restart(
    serve_factory: Callable[..., ServeProcess],
    database_url: str,
    emulator: EmulatorProcess,
    tmp_path: Path,
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    repo = Repo(mirror, "acme", "slow")
    repo.commit(SLOW_JS)
    repo.tag("v1")
    env = {
        "DATABASE_URL": database_url,
        "RUNNER": "kubernetes",
        "KUBECONFIG": str(emulator.kubeconfig_path),
        "K8S_NAMESPACE": "ci",
        "K8S_MARKER_SECRET": "test-marker-secret",
        "LEASE_SECONDS": "2",
        "ACTIONS_URL": str(mirror),
        "ACTIONS_CACHE_DIR": str(tmp_path / "actions-cache"),
    }
    body: dict[str, object] = {}
    for stop_at in ("js-tick-3", "c-tick-3"):
        server = serve_factory(env, name=f"before-{stop_at}")
        async with httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=30) as client:
            if not body:
                body = await create(client, workflow(WORKFLOW))
            await wait_for_output(client, body["id"], stop_at)
        server.stop(signal.SIGKILL)
    last = serve_factory(env, name="last")
    async with httpx.AsyncClient(base_url=f"{last.url}/api/v1", timeout=30) as client:
        done = await wait_for_build(client, body["id"], timeout=180)
        text = await log_text(client, body["id"])
    assert done["status"] == "success", text
    steps = job(done, "a")["steps"]
    assert [(s["name"], s["status"]) for s in steps] == [
        ("Run acme/slow/js@v1", "success"),
        ("Run acme/slow/composite@v1", "success"),
        (steps[2]["name"], "success"),
        ("Post Run acme/slow/js@v1", "success"),
    ]
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("js-tick-")] == [
        f"js-tick-{i}" for i in range(1, 31)
    ]
    assert [line for line in lines if line.startswith("c-tick-")] == [
        f"c-tick-{i}" for i in range(1, 21)
    ]
    assert lines.count("pre-done") == 1
    # the runtime's own lines (a composite's step labels) are not repeated either
    labels = [line for line in lines if line.startswith("▶")]
    assert len(labels) == len(set(labels)) == 4, labels  # js pre and post, composite one and two
    assert lines.count("nested-one-done") == 1
    assert "out=main-done second=after-first" in text
    assert "post: p1,m2" in text
