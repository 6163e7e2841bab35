"""GitHub Actions conformance through the Kubernetes runner: the service (the real app, its HTTP
API) with RUNNER=kubernetes against the in-repo emulator, whose pods are real local processes and
whose exec speaks the websocket channel protocol.

The local runner's conformance suite (tests/workflow/test_conformance.py) runs here again, case by
case, on this runner: same workflows, same assertions. The tests after it cover what only a runner
whose workspace is remote can get wrong (hashFiles, absolute working directories); they run on both
runners."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.k8s.gha_fixtures import kubernetes_settings, readable_tmp  # noqa: F401
from tests.support import job, log_text
from tests.support import run_workflow as run
from tests.workflow import test_conformance as local

Case = Callable[..., Awaitable[None]]
CASES: list[Case] = [
    getattr(local, name)
    for name in dir(local)
    if name.startswith("test_") and inspect.iscoroutinefunction(getattr(local, name))
]


@pytest.fixture(params=["local", "kubernetes"])
def runner_kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def settings_overrides(runner_kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if runner_kind == "local":
        return {}
    return kubernetes_settings(request.getfixturevalue("emulator"))


@pytest.mark.parametrize("runner_kind", ["kubernetes"])
@pytest.mark.parametrize("case", CASES, ids=[c.__name__.removeprefix("test_") for c in CASES])
async def test_local_conformance_case_on_kubernetes(
    case: Case,
    client: httpx.AsyncClient,
    readable_tmp: Path,  # noqa: F811 (the fixture)
) -> None:
    arguments: dict[str, Any] = {"client": client}
    if "tmp_path" in inspect.signature(case).parameters:
        # e.g. the repository a `file://` checkout clones: the pod's user must be able to read it
        arguments["tmp_path"] = readable_tmp
    await case(**arguments)


def files_hash(*contents: bytes) -> str:
    """GitHub's hashFiles: SHA-256 over the files' SHA-256 digests, in path order."""
    total = hashlib.sha256()
    for content in contents:
        total.update(hashlib.sha256(content).digest())
    return total.hexdigest()


async def test_hash_files_hashes_the_jobs_workspace(client: httpx.AsyncClient) -> None:
    # docs: "hashFiles" examples (one pattern, several patterns, in `if:`)
    done = await run(
        client,
        """
        jobs:
          build:
            steps:
              - run: |
                  mkdir -p app/sub
                  printf one > package-lock.json
                  printf two > app/sub/package-lock.json
                  printf gem > Gemfile.lock
              - run: |
                  echo "one=${{ hashFiles('**/package-lock.json') }}"
                  echo "two=${{ hashFiles('**/package-lock.json', '**/Gemfile.lock') }}"
                  echo "none=[${{ hashFiles('no-such-file-*') }}]"
              - if: hashFiles('Gemfile.lock') != ''
                run: echo "gemfile present"
              - if: hashFiles('Cargo.lock') != ''
                run: echo "never"
        """,
    )
    assert done["status"] == "success", done
    assert [s["status"] for s in job(done, "build")["steps"]] == [
        "success",
        "success",
        "success",
        "skipped",
    ]
    text = await log_text(client, done["id"])
    # path order: app/sub/package-lock.json, then package-lock.json (Gemfile.lock first of all)
    assert f"one={files_hash(b'two', b'one')}" in text
    assert f"two={files_hash(b'gem', b'two', b'one')}" in text
    assert "none=[]" in text
    assert "gemfile present" in text


async def test_absolute_working_directory(client: httpx.AsyncClient) -> None:
    done = await run(
        client,
        """
        jobs:
          build:
            defaults:
              run:
                working-directory: ${{ github.workspace }}/sub
            steps:
              - run: mkdir sub
                working-directory: .
              - run: |
                  touch here
                  echo "in $(basename "$PWD")"
              - run: ls sub
                working-directory: ${{ github.workspace }}
        """,
    )
    text = await log_text(client, done["id"])
    assert done["status"] == "success", text
    assert "in sub" in text
    assert "here" in text.splitlines()


async def test_env_file_names_a_shell_cannot_export(client: httpx.AsyncClient) -> None:
    # GitHub sets any name from $GITHUB_ENV in the next steps' environment (@actions/core reads
    # inputs the same way: INPUT_RETENTION-DAYS); a POSIX shell cannot `export` such a name.
    done = await run(
        client,
        """
        jobs:
          build:
            steps:
              - run: |
                  echo "DASHED-NAME=dash value" >> "$GITHUB_ENV"
                  echo "PLAIN=plain" >> "$GITHUB_ENV"
              - run: |
                  env | grep -e '^DASHED-NAME=' -e '^PLAIN='
                  echo "expr=${{ env['DASHED-NAME'] }}"
        """,
    )
    text = await log_text(client, done["id"])
    assert done["status"] == "success", text
    assert "DASHED-NAME=dash value" in text.splitlines()
    assert "PLAIN=plain" in text.splitlines()
    assert "expr=dash value" in text


async def test_hash_files_in_the_with_of_an_action(client: httpx.AsyncClient) -> None:
    # docs: the `actions/cache` example, `key: ${{ runner.os }}-${{ hashFiles('**/x.lock') }}`
    done = await run(
        client,
        """
        jobs:
          build:
            steps:
              - run: |
                  mkdir -p .github/actions/keyed sub
                  printf lock > sub/deps.lock
                  printf '%s\\n' 'name: Keyed' 'inputs: {key: {required: true}}' \\
                    'runs: {using: composite, steps: [{run: echo "key=$INPUT_KEY", shell: sh}]}' \\
                    > .github/actions/keyed/action.yml
              - uses: ./.github/actions/keyed
                with:
                  key: ${{ runner.os }}-${{ hashFiles('**/*.lock') }}
        """,
    )
    text = await log_text(client, done["id"])
    assert done["status"] == "success", text
    assert f"key=Linux-{files_hash(b'lock')}" in text
