"""The step invocation protocol (app/workflow/session.py) driven by a minimal runner written here,
without the local runner: what another runner (the kubernetes one) must do, and what a runner
still on `prepare`/`finish` gets for an action step (an error, never a silent success)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from app.models import Build
from app.runners.base import JobRun
from app.services.plan import job_run
from app.workflow import parse_workflow
from app.workflow.invocation import FetchAction, Invocation, Log, Ran, ReadFile
from app.workflow.runtime import RuntimeFiles

ACTION = """
name: Local
inputs:
  who: {default: you}
outputs:
  said: {value: "${{ steps.one.outputs.word }}-${{ steps.two.outputs.word }}"}
runs:
  using: composite
  steps:
    - id: one
      run: echo "word=hi-$INPUT_WHO" >> "$GITHUB_OUTPUT"
      shell: bash
    - id: two
      if: steps.one.outputs.word == 'hi-me'
      run: echo "word=${{ steps.one.outputs.word }}!" >> "$GITHUB_OUTPUT"
      shell: sh
"""

WORKFLOW = """
jobs:
  a:
    steps:
      - id: local
        uses: ./act
        with: {who: me}
      - run: echo "${{ steps.local.outputs.said }}" > said.txt
"""


def plan(tmp_path: Path) -> JobRun:
    build = Build(id=1, pipeline_id="p", number=1, triggered_by="t", variables={})
    spec = parse_workflow(WORKFLOW)
    run = job_run(build, spec, spec.jobs[0], frozenset())
    assert run.runtime is not None
    (tmp_path / "ws" / "act").mkdir(parents=True)
    (tmp_path / "ws" / "act" / "action.yml").write_text(ACTION)
    (tmp_path / "tmp").mkdir()
    run.runtime.start(workspace=str(tmp_path / "ws"), temp=str(tmp_path / "tmp"), tool_cache="/t")
    return run


def execute(request: Invocation, workspace: Path) -> Ran:
    for path in request.files.values():
        Path(path).write_text("")
    if request.script_name:
        (Path(request.files["GITHUB_OUTPUT"]).parent / request.script_name).write_text(
            request.script
        )
    done = subprocess.run(
        request.argv, env=request.env, cwd=workspace / (request.working_directory or "."),
        capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    texts = {name: Path(path).read_text() for name, path in request.files.items()}
    return Ran(
        "success" if done.returncode == 0 else "failed",
        done.returncode,
        RuntimeFiles(
            output=texts["GITHUB_OUTPUT"],
            env=texts["GITHUB_ENV"],
            path=texts["GITHUB_PATH"],
            summary=texts["GITHUB_STEP_SUMMARY"],
            state=texts["GITHUB_STATE"],
        ),
    )


async def test_a_minimal_runner_drives_a_local_composite_action(tmp_path: Path) -> None:
    run = plan(tmp_path)
    runtime = run.runtime
    assert runtime is not None
    seen: list[str] = []

    async def read_text(path: str) -> str | None:
        file = Path(path)
        return file.read_text() if file.is_file() else None

    for step in run.steps:
        session = runtime.session(step, base_path="/usr/bin:/bin")
        request = session.send(None)
        while request is not None:
            reply: Any = None
            seen.append(type(request).__name__)
            if isinstance(request, Invocation):
                reply = execute(request, tmp_path / "ws")
            elif isinstance(request, ReadFile | FetchAction):
                reply = await session.load(request, read_text)
            else:
                assert isinstance(request, Log)
            request = session.send(reply)
        assert session.end.status == "success", session.end
    # action.yml read through the runner, then one process per nested step, then the `run`.
    assert seen == ["ReadFile", "Invocation", "Invocation", "Invocation"]
    assert runtime.step_outputs[0] == {"said": "hi-me-hi-me!"}
    assert (tmp_path / "ws" / "said.txt").read_text() == "hi-me-hi-me!\n"


def test_a_runner_still_on_prepare_gets_an_error_for_an_action_step(tmp_path: Path) -> None:
    run = plan(tmp_path)
    assert run.runtime is not None
    prepared = run.runtime.prepare(run.steps[0], files={}, temp=str(tmp_path), base_path="")
    assert prepared.run and prepared.error is not None
    assert "does not run actions yet" in prepared.error
