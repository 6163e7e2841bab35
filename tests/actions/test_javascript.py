"""JavaScript actions (`runs.using: node20`) in real builds through the HTTP API, on the local
runner: `pre`, `main` and `post` with `pre-if`/`post-if`, `$GITHUB_STATE` → `STATE_*` between
phases, inputs as `INPUT_*`, the toolkit's environment, "Post <step>" rows at the job's end in
GitHub's order, and a clear step error when `node` is missing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.actions.repos import Repo
from tests.support import create, job, log_text, wait_for_build, workflow

STATEFUL = """
name: Stateful
inputs:
  who: {default: nobody}
  fetch-depth: {default: "1"}
outputs:
  greeting: {description: what main said}
runs:
  using: node20
  pre: pre.js
  main: main.js
  post: post.js
"""
PRE = """
const fs = require('fs');
fs.appendFileSync(process.env.GITHUB_STATE, 'fromPre=p1\\n');
console.log(`pre ran for ${process.env.INPUT_WHO}`);
"""
MAIN = """
const fs = require('fs');
const e = process.env;
console.log(`main: state=${e.STATE_fromPre} who=${e.INPUT_WHO} depth=${e['INPUT_FETCH-DEPTH']}`);
const repo = `${e.GITHUB_ACTION_REPOSITORY}@${e.GITHUB_ACTION_REF}`;
console.log(`main: action=${e.GITHUB_ACTION} repo=${repo}`);
console.log(`main: path-ok=${fs.existsSync(e.GITHUB_ACTION_PATH + '/main.js')}`);
console.log(`main: path=${e.GITHUB_ACTION_PATH}`);
const dirs = `temp=${!!e.RUNNER_TEMP} tools=${!!e.RUNNER_TOOL_CACHE}`;
console.log(`main: ${dirs} server=${e.GITHUB_SERVER_URL}`);
console.log(`main: token=${!!e.ACTIONS_RUNTIME_TOKEN} results=${e.ACTIONS_RESULTS_URL}`);
console.log(`main: raw-token=${e.ACTIONS_RUNTIME_TOKEN}`);
console.log(`main: cache=${e.ACTIONS_CACHE_URL} runtime=${e.ACTIONS_RUNTIME_URL}`);
fs.appendFileSync(e.GITHUB_STATE, 'fromMain=m2\\n');
fs.appendFileSync(e.GITHUB_OUTPUT, `greeting=hi ${e.INPUT_WHO}\\n`);
"""
POST = """
const e = process.env;
console.log(`post: state=${e.STATE_fromPre},${e.STATE_fromMain} who=${e.INPUT_WHO}`);
"""
STRICT = """
name: Strict
runs:
  using: node24
  main: main.js
  post: post.js
  post-if: success()
"""


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    return {
        "actions_url": str(mirror),
        "actions_cache_dir": tmp_path / "actions-cache",
        "actions_public_url": "http://ci.example.test:8000",
    }


@pytest.fixture
def mirror(settings_overrides: dict[str, Any]) -> Path:
    repo = Repo(Path(settings_overrides["actions_url"]), "acme", "node")
    repo.commit(
        {
            "state/action.yml": STATEFUL,
            "state/pre.js": PRE,
            "state/main.js": MAIN,
            "state/post.js": POST,
            "strict/action.yml": STRICT,
            "strict/main.js": "console.log('strict main');\n",
            "strict/post.js": "console.log('STRICT-POST');\n",
        }
    )
    repo.tag("v1")
    wrap = Repo(Path(settings_overrides["actions_url"]), "acme", "wrap")
    wrap.commit(
        {
            "action.yml": """
name: Wrap
runs:
  using: composite
  steps:
    - uses: acme/node/state@v1
      with: {who: nested}
    - run: echo wrapped-step-done
      shell: bash
"""
        }
    )
    wrap.tag("v1")
    return Path(settings_overrides["actions_url"])


@pytest.mark.usefixtures("mirror")
async def test_pre_main_post_with_state_post_if_and_the_toolkit_environment(
    client: httpx.AsyncClient,
) -> None:
    created = await create(
        client,
        workflow(
            """
            jobs:
              a:
                steps:
                  - id: s
                    name: Stateful
                    uses: acme/node/state@v1
                    with:
                      who: me
                  - uses: acme/node/strict@v1
                  - run: echo "out=${{ steps.s.outputs.greeting }}"; exit 4
            """
        ),
    )
    # The post rows exist from the start, last action's first, as GitHub lists them.
    names = [s["name"] for s in job(created, "a")["steps"]]
    assert names == [
        "Stateful",
        "Run acme/node/strict@v1",
        'Run echo "out=${{ steps.s.outputs.greeting }}"; exit 4',
        "Post Run acme/node/strict@v1",
        "Post Stateful",
    ]
    done = await wait_for_build(client, created["id"])
    assert done["status"] == "failed"
    steps = job(done, "a")["steps"]
    assert [(s["status"], s["exit_code"]) for s in steps] == [
        ("success", 0),
        ("success", 0),
        ("failed", 4),
        ("skipped", None),  # post-if: success() after a failure
        ("success", 0),  # the default post-if is always()
    ]
    assert steps[0]["outputs"] == {"greeting": "hi me"}
    text = await log_text(client, done["id"])
    assert "pre ran for me" in text
    assert "main: state=p1 who=me depth=1" in text
    assert "main: action=s repo=acme/node@v1" in text
    assert "main: path-ok=true" in text
    # A copy inside the build's directory (which the sandbox shows), or in the pod on the
    # kubernetes runner (tests/k8s/test_actions_kubernetes.py), not the executor's cache.
    action_path = text.split("main: path=", 1)[1].split("\n", 1)[0]
    copies = r"(/workspaces/\d+/_actions|/ci/actions)"
    assert re.search(copies + r"/acme/node/[0-9a-f]{40}/state$", action_path), action_path
    assert "main: temp=true tools=true server=https://github.com" in text
    assert "main: token=true results=http://ci.example.test:8000/" in text
    assert "main: raw-token=***\n" in text  # masked, as on GitHub
    assert (
        "main: cache=http://ci.example.test:8000/_actions/cache/ "
        "runtime=http://ci.example.test:8000/_actions/runtime/"
    ) in text
    assert "out=hi me" in text
    assert "post: state=p1,m2 who=me" in text
    assert "STRICT-POST" not in text


@pytest.mark.usefixtures("mirror")
async def test_a_skipped_step_has_no_post(client: httpx.AsyncClient) -> None:
    done = await wait_for_build(
        client,
        (
            await create(
                client,
                workflow(
                    """
                    jobs:
                      a:
                        steps:
                          - if: ${{ false }}
                            uses: acme/node/state@v1
                          - uses: acme/node/strict@v1
                    """
                ),
            )
        )["id"],
    )
    assert done["status"] == "success"
    steps = job(done, "a")["steps"]
    assert [(s["name"], s["status"]) for s in steps] == [
        ("Run acme/node/state@v1", "skipped"),
        ("Run acme/node/strict@v1", "success"),
        ("Post Run acme/node/strict@v1", "success"),
        ("Post Run acme/node/state@v1", "skipped"),
    ]
    assert "STRICT-POST" in await log_text(client, done["id"])


@pytest.mark.usefixtures("mirror")
async def test_a_missing_node_is_a_clear_step_error(
    client: httpx.AsyncClient,
) -> None:
    done = await wait_for_build(
        client,
        (
            await create(
                client,
                workflow(
                    """
                    jobs:
                      a:
                        steps:
                          - uses: acme/node/strict@v1
                            env:
                              PATH: /nonexistent
                          - if: failure()
                            run: echo "reported=${{ job.status }}"
                    """
                ),
            )
        )["id"],
    )
    assert done["status"] == "failed"  # the step failed; not an infrastructure error
    steps = job(done, "a")["steps"]
    assert [s["status"] for s in steps] == ["failed", "success", "skipped"]
    text = await log_text(client, done["id"])
    assert (
        "acme/node/strict@v1 is a JavaScript action (runs.using: node24) and needs `node`, "
        "which is not installed in this job's image or on this host"
    ) in text


@pytest.mark.usefixtures("mirror")
async def test_a_javascript_action_inside_a_composite_runs_its_post_at_the_steps_end(
    client: httpx.AsyncClient,
) -> None:
    created = await create(
        client,
        workflow(
            """
            jobs:
              a:
                steps:
                  - uses: acme/wrap@v1
                  - run: echo after-wrap
            """
        ),
    )
    assert [s["name"] for s in job(created, "a")["steps"]] == [
        "Run acme/wrap@v1",
        "Run echo after-wrap",
    ]
    done = await wait_for_build(client, created["id"])
    text = await log_text(client, done["id"])
    assert done["status"] == "success", text
    order = [
        text.index(marker)
        for marker in (
            "pre ran for nested",
            "main: state=p1 who=nested",
            "wrapped-step-done",
            "post: state=p1,m2 who=nested",
            "after-wrap",
        )
    ]
    assert order == sorted(order)
