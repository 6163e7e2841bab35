"""Composite actions in real builds through the HTTP API, on the local runner (sandboxed where the
machine allows it): local `./path` actions from the checked-out repository, remote ones from bare
git repositories the tests create (ACTIONS_URL is their directory), pinned when the build is
created; and the errors at creation: unknown action (422), Docker (422), git server down (503)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.actions.repos import Repo
from tests.support import create, job, log_text, wait_for_build, workflow
from tests.support import run_workflow as run

GREET = """
name: Greet
inputs:
  who:
    description: whom to greet
    default: world
  mood:
    required: false
outputs:
  greeting:
    value: ${{ steps.say.outputs.text }}
  never-outcome:
    value: ${{ steps.never.outcome }}
runs:
  using: composite
  steps:
    - id: say
      run: echo "text=hello ${{ inputs.who }} ($INPUT_WHO)" >> "$GITHUB_OUTPUT"
      shell: bash
    - id: never
      if: steps.say.outputs.text == 'nope'
      run: echo SHOULD-NOT-RUN
      shell: bash
    - if: startsWith(steps.say.outputs.text, 'hello')
      run: bash "$GITHUB_ACTION_PATH/tool.sh" "${{ github.action_path }}"
      shell: bash
      env:
        TOOL_ENV: ${{ inputs.mood }}-x
    - run: echo "COMPOSITE_SET=yes" >> "$GITHUB_ENV"
      shell: sh
"""

TOOL = 'echo "tool ran in $1 with $TOOL_ENV"\n'


@pytest.fixture
def settings_overrides(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    given: dict[str, Any] = getattr(request, "param", {})
    return {"actions_url": str(mirror), "actions_cache_dir": tmp_path / "actions-cache", **given}


@pytest.fixture
def mirror(settings_overrides: dict[str, Any]) -> Path:
    return Path(settings_overrides["actions_url"])


async def test_local_composite_inputs_outputs_nested_if_env_and_action_path(
    client: httpx.AsyncClient, mirror: Path
) -> None:
    project = Repo(mirror, "me", "project")
    project.commit(
        {".github/actions/greet/action.yml": GREET, ".github/actions/greet/tool.sh": TOOL}
    )
    done = await run(
        client,
        """
        env:
          MOOD: happy
        jobs:
          a:
            steps:
              - uses: actions/checkout@v4
              - id: greet
                uses: ./.github/actions/greet
                with:
                  mood: ${{ env.MOOD }}
              - id: again
                uses: ./.github/actions/greet/
                with:
                  who: ${{ steps.greet.outputs.greeting }}
              - run: echo "env=$COMPOSITE_SET again=${{ steps.again.outputs.greeting }}"
              - id: hashed
                uses: ./.github/actions/greet
                with:
                  who: ${{ hashFiles('.github/actions/greet/tool.sh') }}
        """,
        repo_url=f"file://{project.bare}",
        branch="main",
    )
    assert done["status"] == "success", await log_text(client, done["id"])
    steps = job(done, "a")["steps"]
    assert [s["status"] for s in steps] == ["success"] * 5
    assert re.fullmatch(r"hello [0-9a-f]{64} \([0-9a-f]{64}\)", steps[4]["outputs"]["greeting"])
    assert steps[1]["outputs"] == {"greeting": "hello world (world)", "never-outcome": "skipped"}
    assert steps[2]["outputs"]["greeting"] == "hello hello world (world) (hello world (world))"
    text = await log_text(client, done["id"])
    assert "SHOULD-NOT-RUN" not in text
    workspace = text.split("tool ran in ", 1)[1].split(" with ", 1)[0]
    assert workspace.endswith("/.github/actions/greet")
    assert "with happy-x" in text  # the nested step's env, from the input
    assert "with -x" in text  # the second use: `mood` has no default
    assert "env=yes again=hello hello world" in text  # $GITHUB_ENV of a nested step


async def test_composite_failure_skips_the_rest_unless_a_status_function_says_otherwise(
    client: httpx.AsyncClient, mirror: Path
) -> None:
    Repo(mirror, "acme", "fragile").commit(
        {
            "action.yml": """
name: Fragile
outputs:
  cleaned:
    value: ${{ steps.cleanup.outputs.done }}
runs:
  using: composite
  steps:
    - run: echo breaking; exit 3
      shell: bash
    - run: echo AFTER-FAILURE
      shell: bash
    - id: cleanup
      if: failure()
      run: echo "done=yes" >> "$GITHUB_OUTPUT"
      shell: bash
"""
        }
    )
    done = await run(
        client,
        """
        jobs:
          a:
            steps:
              - id: f
                uses: acme/fragile@main
                continue-on-error: true
              - run: echo "outcome=${{ steps.f.outcome }} cleaned=${{ steps.f.outputs.cleaned }}"
        """,
    )
    assert done["status"] == "success", await log_text(client, done["id"])
    steps = job(done, "a")["steps"]
    assert [(s["status"], s["exit_code"]) for s in steps] == [("failed", 3), ("success", 0)]
    text = await log_text(client, done["id"])
    assert "AFTER-FAILURE" not in text
    assert "outcome=failure cleaned=yes" in text


async def test_remote_composite_nesting_a_remote_action_runs_the_commit_pinned_at_creation(
    client: httpx.AsyncClient, mirror: Path
) -> None:
    inner = Repo(mirror, "acme", "inner")
    inner.commit({"action.yml": GREET, "tool.sh": TOOL})
    inner.tag("v1")
    outer = Repo(mirror, "acme", "outer")
    outer.commit(
        {
            "sub/action.yaml": """
name: Outer
inputs:
  name: {default: nobody}
outputs:
  said:
    value: ${{ steps.inner.outputs.greeting }} / v1
runs:
  using: composite
  steps:
    - id: inner
      uses: acme/inner@v1
      with:
        who: ${{ inputs.name }}
"""
        }
    )
    outer.tag("v1")
    text = """
        jobs:
          a:
            steps:
              - id: o
                uses: acme/outer/sub@v1
                with: {name: pinned}
              - run: echo "said=${{ steps.o.outputs.said }}"
        """
    first = await run(client, text)
    assert first["status"] == "success", await log_text(client, first["id"])
    assert job(first, "a")["steps"][0]["outputs"] == {"said": "hello pinned (pinned) / v1"}

    # The tags move: a retry runs the commits pinned when the first build was created (the
    # nested action's too)...
    outer.commit({"sub/action.yaml": "name: Moved\nruns: {using: composite, steps: []}\n"})
    outer.tag("v1")
    inner.commit({"action.yml": GREET.replace("text=hello", "text=bye"), "tool.sh": TOOL})
    inner.tag("v1")
    response = await client.post(f"/builds/{first['id']}/retry", json={})
    assert response.status_code == 201, response.text
    retried = await wait_for_build(client, response.json()["id"])
    assert job(retried, "a")["steps"][0]["outputs"] == {"said": "hello pinned (pinned) / v1"}
    # ... and a new build resolves the tag again.
    fresh = await run(client, text)
    assert fresh["status"] == "success", await log_text(client, fresh["id"])
    assert job(fresh, "a")["steps"][0]["outputs"] == {}


async def test_unusable_actions_are_refused_at_creation(
    client: httpx.AsyncClient, mirror: Path
) -> None:
    repo = Repo(mirror, "acme", "tools")
    repo.commit(
        {
            "container/action.yml": "name: Boxed\nruns: {using: docker, image: Dockerfile}\n",
            "README": "no action.yml at the root",
        }
    )
    yaml_text = workflow(
        """
        jobs:
          a:
            steps:
              - uses: acme/missing@v1
              - uses: acme/tools@v9
              - uses: acme/tools/container@main
              - uses: acme/tools@main
        """
    )
    detail = (await create(client, yaml_text, expect=422))["detail"]
    messages = [p["message"] for p in detail]
    assert len(messages) == 4, messages
    assert messages[0].startswith("action acme/missing@v1: ")
    assert "repository acme/missing not found" in messages[0]
    assert "no tag or branch 'v9'" in messages[1]
    assert "Docker actions (runs.using: docker) are not supported" in messages[2]
    assert "no action.yml or action.yaml" in messages[3]
    # Docker images and reusable workflows are refused by the parser, with their position.
    for uses in ("docker://alpine:3.20", "acme/tools/.github/workflows/ci.yml@main"):
        detail = (
            await create(
                client, workflow(f"jobs:\n  a:\n    steps:\n      - uses: {uses}\n"), expect=422
            )
        )["detail"]
        assert detail[0]["line"] == 4 and uses in detail[0]["message"], detail
    listed = (await client.get("/builds")).json()
    assert listed["total"] == 0  # nothing was stored


@pytest.mark.parametrize(
    "settings_overrides",
    [{"actions_url": "http://127.0.0.1:9", "actions_git_timeout_seconds": 30}],
    indirect=True,
)
async def test_an_unreachable_git_server_is_503_not_the_workflows_fault(
    client: httpx.AsyncClient,
) -> None:
    yaml_text = workflow("jobs:\n  a:\n    steps:\n      - uses: acme/tools@v1\n")
    response = await client.post(
        "/builds", json={"pipeline_id": "p1", "triggered_by": "t", "workflow_yaml": yaml_text}
    )
    assert response.status_code == 503, response.text
    assert "acme/tools@v1" in response.json()["detail"]


LEGACY = """
name: Legacy outputs
outputs:
  color:
    value: my-${{ steps.pick.outputs.SELECTED }}
  top:
    value: ${{ steps.pick.outputs.SELECTED }}-${{ inputs.secret }}
inputs:
  secret:
    default: none
runs:
  using: composite
  steps:
    - id: pick
      run: echo '::set-output name=SELECTED::green'
      shell: bash
    - run: exit ${{ inputs.secret == 'fail' && '1' || '0' }}
      shell: bash
"""


async def test_set_output_inside_a_composite_belongs_to_the_nested_step(
    client: httpx.AsyncClient, mirror: Path
) -> None:
    """`::set-output` printed by a nested step is that step's output (act's uses-composite and
    composite-fail-with-output cases): the action's outputs see it, also when a later nested step
    fails, and the calling step's own outputs are only the action's."""
    project = Repo(mirror, "me", "legacy")
    project.commit({"act/action.yml": LEGACY})
    done = await run(
        client,
        """
        jobs:
          a:
            steps:
              - uses: actions/checkout@v4
              - id: ok
                uses: ./act
              - id: bad
                uses: ./act
                continue-on-error: true
                with:
                  secret: fail
              - run: echo "seen=${{ steps.ok.outputs.color }}/${{ steps.bad.outputs.color }}"
        """,
        repo_url=f"file://{project.bare}",
        branch="main",
    )
    assert done["status"] == "success", await log_text(client, done["id"])
    steps = job(done, "a")["steps"]
    assert [s["status"] for s in steps] == ["success", "success", "failed", "success"]
    assert steps[1]["outputs"] == {"color": "my-green", "top": "green-none"}
    assert steps[2]["outputs"] == {"color": "my-green", "top": "green-fail"}
    assert "seen=my-green/my-green" in await log_text(client, done["id"])


async def test_a_local_action_symlinked_out_of_the_workspace_is_not_read(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Steps write the workspace: an action.yml (or its directory) that a step links to a file
    outside it must not be read by the service, which can read files the step cannot (its
    database, its secrets key) and would echo parts of them in the parse error."""
    outside = tmp_path / "service-secret"
    outside.mkdir()
    (outside / "action.yml").write_text("name: LEAKED-SECRET-NAME\nruns: [LEAKED-SECRET-VALUE]\n")
    done = await run(
        client,
        f"""
        jobs:
          a:
            steps:
              - run: |
                  mkdir -p byfile && ln -s {outside}/action.yml byfile/action.yml
                  ln -s {outside} bydir
              - uses: ./byfile
                continue-on-error: true
              - uses: ./bydir
        """,
    )
    text = await log_text(client, done["id"])
    assert done["status"] == "failed", text
    assert [s["status"] for s in job(done, "a")["steps"]] == ["success", "failed", "failed"]
    assert "LEAKED" not in text
    assert text.count("no action.yml or action.yaml") == 2, text
