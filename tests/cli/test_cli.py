"""The `ci-executor` command line: help, `run` with live output, summary, exit code and Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "app.cli"]


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("command", [[], ["serve"], ["migrate"], ["run"]])
def test_help_is_useful(command: list[str]) -> None:
    result = _run(*command, "--help")
    assert result.returncode == 0
    assert "usage: ci-executor" in result.stdout
    assert len(result.stdout.splitlines()) >= 4


def test_run_succeeds_with_prefixed_output_and_summary(tmp_path: Path) -> None:
    wf = tmp_path / "ci.yml"
    wf.write_text(
        "jobs:\n  build:\n    steps:\n      - name: greet\n        run: echo hello $WHO\n"
        "  test:\n    needs: build\n    steps:\n      - run: echo tested\n"
    )
    result = _run("run", str(wf), "--var", "WHO=world")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[build/greet] hello world" in result.stdout
    assert "[test/Run echo tested] tested" in result.stdout
    assert "JOB / STEP" in result.stdout
    assert "build 1: success" in result.stdout


def test_run_failure_exit_code_and_invalid_file(tmp_path: Path) -> None:
    wf = tmp_path / "ci.yml"
    wf.write_text("jobs:\n  a:\n    steps:\n      - run: exit 3\n")
    result = _run("run", str(wf))
    assert result.returncode == 1
    assert "failed     3" in result.stdout or "failed  3" in result.stdout.replace("   ", "  ")
    bad = tmp_path / "bad.yml"
    bad.write_text("jobs:\n  a:\n    steps:\n      - uses: x\n")
    result = _run("run", str(bad))
    assert result.returncode == 2
    assert "line 4, column 15" in result.stdout
    missing = _run("run", str(tmp_path / "nope.yml"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stdout


def test_run_ctrl_c_cancels(tmp_path: Path) -> None:
    wf = tmp_path / "ci.yml"
    pidfile = tmp_path / "pid"
    wf.write_text(f"jobs:\n  a:\n    steps:\n      - run: echo $$ > {pidfile}; sleep 120\n")
    proc = subprocess.Popen(
        [*CLI, "run", str(wf)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "step never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "cancelling" in out
    assert "build 1: cancelled" in out


def test_run_fetches_remote_actions_and_names_an_unknown_one(tmp_path: Path) -> None:
    from tests.actions.repos import Repo

    mirror = tmp_path / "mirror"
    Repo(mirror, "acme", "hello").commit(
        {
            "action.yml": "name: Hello\nruns:\n  using: composite\n  steps:\n"
            "    - run: echo hello from the action\n      shell: bash\n"
        }
    )
    env = {
        **os.environ,
        "ACTIONS_URL": str(mirror),
        "ACTIONS_CACHE_DIR": str(tmp_path / "actions-cache"),
    }
    wf = tmp_path / "ci.yml"
    wf.write_text("jobs:\n  a:\n    steps:\n      - uses: acme/hello@main\n")
    result = subprocess.run(
        [*CLI, "run", str(wf)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello from the action" in result.stdout
    wf.write_text("jobs:\n  a:\n    steps:\n      - uses: acme/nothere@v1\n")
    result = subprocess.run(
        [*CLI, "run", str(wf)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "action acme/nothere@v1: " in result.stdout
    assert "repository acme/nothere not found" in result.stdout
