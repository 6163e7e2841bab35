"""What nektos/act's run-only test workflows need, as GitHub defines it (see
tests/workflow/corpus/act_measure.py): absolute `working-directory`, build variables in the
`env` context, services whose image is empty, and the `ci-executor run` flags that reproduce a
trigger's context (actor, repository, inputs, secrets)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import create, job, log_text, wait_for_build, workflow

ROOT = Path(__file__).resolve().parents[2]


async def _run(client: httpx.AsyncClient, text: str, **body: object) -> dict[str, object]:
    created = await create(client, workflow(text), **body)
    return await wait_for_build(client, created["id"])


async def test_absolute_working_directory_is_used_as_given(client: httpx.AsyncClient) -> None:
    # GitHub runs a step in an absolute working-directory as it is (act's `workdir` test);
    # a relative one is resolved in the workspace and may not climb out of it.
    done = await _run(
        client,
        """
        defaults:
          run:
            working-directory: /tmp
        jobs:
          top:
            steps:
              - run: echo "top in $(pwd)"
          own:
            defaults:
              run:
                working-directory: /
            steps:
              - run: echo "own in $(pwd)"
              - run: echo "step in $(pwd)"
                working-directory: /tmp
              - run: mkdir -p sub
                working-directory: ${{ github.workspace }}
              - run: echo "relative in $(basename "$(pwd)")"
                working-directory: sub
              - run: echo never
                working-directory: ../..
        """,
    )
    text = await log_text(client, done["id"])
    assert "top in /tmp" in text
    assert re.search(r"own in /$", text, re.MULTILINE)
    assert "step in /tmp" in text
    assert "relative in sub" in text
    assert "working-directory '../..' is outside the workspace" in text
    assert [s["status"] for s in job(done, "own")["steps"]] == [
        "success",
        "success",
        "success",
        "success",
        "failed",
    ]
    assert job(done, "top")["status"] == "success"


async def test_build_variables_are_in_the_env_context(client: httpx.AsyncClient) -> None:
    # A build variable is in every step's environment, so `env.X` sees it in `if` and `run`
    # (act's `if-env-act` reads `env.ACT`, which act sets).
    done = await _run(
        client,
        """
        env:
          FROM_WORKFLOW: w
        jobs:
          check:
            steps:
              - if: ${{ env.RUNNING_UNDER }}
                run: echo "seen ${{ env.RUNNING_UNDER }} ${{ env.FROM_WORKFLOW }}"
              - if: ${{ !env.RUNNING_UNDER }}
                run: exit 1
        """,
        variables={"RUNNING_UNDER": "here"},
    )
    assert done["status"] == "success"
    assert [s["status"] for s in job(done, "check")["steps"]] == ["success", "skipped"]
    assert "seen here w" in await log_text(client, done["id"])


async def test_a_service_with_an_empty_image_is_not_started(client: httpx.AsyncClient) -> None:
    done = await _run(
        client,
        """
        jobs:
          optional:
            services:
              db:
                image: ${{ false || '' }}
            steps:
              - run: echo ran without the service
          needed:
            services:
              db:
                image: postgres:16
            steps:
              - run: echo never
        """,
    )
    assert job(done, "optional")["status"] == "success"
    assert "ran without the service" in await log_text(client, done["id"])
    needed = job(done, "needed")
    assert needed["status"] == "failed"
    assert "`services:` (db) need the kubernetes runner" in str(needed["error"])


def test_run_flags_reproduce_a_triggers_context(tmp_path: Path) -> None:
    wf = tmp_path / "ci.yml"
    wf.write_text(
        "on:\n  workflow_dispatch:\n    inputs:\n      name: {type: string}\n"
        "jobs:\n  show:\n    steps:\n"
        "      - run: |\n"
        '          test "${{ github.actor }}" = octo-cat\n'
        '          test "$GITHUB_ACTOR" = octo-cat\n'
        '          test "${{ github.repository }}" = octo/hello\n'
        '          test "$GITHUB_REPOSITORY_OWNER" = octo\n'
        '          test "${{ inputs.name }}" = mona\n'
        '          test "${{ github.event.inputs.name }}" = mona\n'
        '          test "${{ secrets.API_PASS }}" = s3cr3t-value\n'
        '          echo "secret is ${{ secrets.API_PASS }}"\n'
    )
    result = subprocess.run(
        [
            *(sys.executable, "-m", "app.cli", "run", str(wf)),
            *("--event-name", "workflow_dispatch", "--actor", "octo-cat"),
            *("--repository", "octo/hello", "--input", "name=mona"),
            *("--secret", "API_PASS=s3cr3t-value"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "secret is ***" in result.stdout
    assert "s3cr3t-value" not in result.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "app.cli", "run", str(wf), "--input", "novalue"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode != 0
    assert "--input expects K=V" in bad.stdout + bad.stderr


def test_run_takes_repository_sha_and_branch_from_the_checkout(tmp_path: Path) -> None:
    # Like act: a workflow inside a git checkout runs with that checkout's repository (from its
    # `origin` remote), HEAD and branch; flags still win.
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    git("init", "-q", "-b", "feature/x")
    git("remote", "add", "origin", "git@github.com:octo-org/octo-repo.git")
    wf = tmp_path / ".github" / "workflows" / "ci.yml"
    wf.parent.mkdir(parents=True)
    wf.write_text(
        "jobs:\n  show:\n    steps:\n      - run: |\n"
        '          echo "repo=${{ github.repository }} owner=$GITHUB_REPOSITORY_OWNER"\n'
        '          echo "ref=${{ github.ref }} sha=$GITHUB_SHA"\n'
    )
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init")
    head = git("rev-parse", "HEAD")

    def run(*flags: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "run", str(wf), *flags],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    text = run()
    assert "repo=octo-org/octo-repo owner=octo-org" in text
    assert f"ref=refs/heads/feature/x sha={head}" in text
    text = run("--repository", "other/name", "--branch", "main")
    assert "repo=other/name owner=other" in text
    assert f"ref=refs/heads/main sha={head}" in text
