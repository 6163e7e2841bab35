"""`ci-executor validate FILE`: the plan and exit 0, or every problem (line:column), exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "validate", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_valid_file_prints_the_plan(tmp_path: Path) -> None:
    wf = tmp_path / "ci.yml"
    wf.write_text(
        "name: CI\non: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n"
        "    strategy: {matrix: {py: ['3.11', '3.12']}}\n"
        "    steps:\n      - uses: actions/checkout@v4\n      - run: make\n"
        "  deploy:\n    needs: build\n    if: github.ref == 'refs/heads/main'\n"
        "    steps: [{name: ship, run: ./ship}]\n"
    )
    result = validate(wf)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "workflow: CI",
        "jobs: 3",
        "- build (3.11)",
        "    matrix: py=3.11",
        "    runs-on: ubuntu-latest",
        "    1. Run actions/checkout@v4",
        "    2. Run make",
        "- build (3.12)",
        "    matrix: py=3.12",
        "    runs-on: ubuntu-latest",
        "    1. Run actions/checkout@v4",
        "    2. Run make",
        "- deploy",
        "    needs: build (3.11), build (3.12)",
        "    if: github.ref == 'refs/heads/main'",
        "    1. ship",
    ]


def test_remote_actions_list_their_possible_post_rows(tmp_path: Path) -> None:
    # As a build plans them: at the job's end, the last step's first; only remote actions (the
    # built-in checkout and local actions have none here). validate does not fetch the
    # actions, so it cannot know which ones define a `post`.
    wf = tmp_path / "ci.yml"
    wf.write_text(
        "jobs:\n  a:\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "      - {name: Cache deps, uses: acme/cache@v1}\n"
        "      - uses: ./local\n"
        "      - uses: acme/setup@v2\n"
        "      - run: make\n"
    )
    result = validate(wf)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2:] == [
        "- a",
        "    1. Run actions/checkout@v4",
        "    2. Cache deps",
        "    3. Run ./local",
        "    4. Run acme/setup@v2",
        "    5. Run make",
        "    +  Post Run acme/setup@v2 (post step if the action defines one)",
        "    +  Post Cache deps (post step if the action defines one)",
    ]


def test_invalid_file_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    wf = tmp_path / "bad.yml"
    wf.write_text(
        "jobs:\n  a:\n    runs_on: x\n    steps:\n      - run: echo ${{ foo( }}\n"
        "      - uses: docker://alpine\n"
    )
    result = validate(wf)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith(
        f"{wf}:3:5: unknown key 'runs_on' in job 'a' (did you mean 'runs-on'?)"
    )
    assert lines[1] == (
        f"{wf}:5:26: `run` of step 1 of job 'a': Unexpected end of expression after '('"
    )
    assert lines[2].startswith(f"{wf}:6:15: step 2 of job 'a' uses 'docker://alpine'")
    assert len(lines) == 3


def test_run_takes_the_event_name_and_payload(tmp_path: Path) -> None:
    wf = tmp_path / "ci.yml"
    wf.write_text(
        "on:\n  workflow_dispatch:\n    inputs:\n      level: {default: '1'}\n"
        "jobs:\n  a:\n    steps:\n"
        '      - run: echo "event=${{ github.event_name }} level=${{ inputs.level }}"\n'
    )
    event = tmp_path / "event.json"
    event.write_text('{"inputs": {"level": "7"}}')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "run",
            str(wf),
            "--event-name",
            "workflow_dispatch",
            "--event",
            str(event),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "event=workflow_dispatch level=7" in result.stdout
