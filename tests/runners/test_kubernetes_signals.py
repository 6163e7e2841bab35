"""The pod's signal programs under the shells images really have as /bin/sh: dash (Debian) and
busybox (Alpine, busybox). A container runtime signals PID 1 only; PID 1 (shell.INIT) must pass
TERM on to each step's process group, and `signal_program` must reach a step's whole group.
Both once used `kill -SIG -- -PGID`, which dash refuses, silently (stderr discarded): the dash
cases fail with it; busybox only complains and signals anyway."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.runners.kubernetes.shell import INIT, signal_program
from tests.support import wait_until

SHELLS = {"dash": ["dash"], "busybox": ["busybox", "sh"]}
STEP = "trap 'echo term > \"$MARK\"; exit 0' TERM; sleep 300 & wait $!"


@pytest.fixture(params=sorted(SHELLS))
def shell(request: pytest.FixtureRequest) -> list[str]:
    argv = SHELLS[request.param]
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    return argv


def _catches_term(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@pytest.fixture
async def step(
    tmp_path: Path, shell: list[str]
) -> AsyncIterator[tuple[subprocess.Popen[bytes], Path]]:
    """A running step, as the pod starts one: its own session (one process group), its pgid in
    $CI_RUN_DIR/0.pgid, a TERM trap that leaves a mark."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    mark = tmp_path / "got-term"
    proc = subprocess.Popen(
        [*shell, "-c", STEP], env={**os.environ, "MARK": str(mark)}, start_new_session=True
    )
    (run_dir / "0.pgid").write_text(f"{proc.pid}\n")
    try:
        await wait_until(lambda: _catches_term(proc.pid), "the step's TERM trap", timeout=10)
        yield proc, mark
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def test_pid1_passes_term_on_to_the_step(
    tmp_path: Path, shell: list[str], step: tuple[subprocess.Popen[bytes], Path]
) -> None:
    proc, mark = step
    env = {**os.environ, "CI_RUN_DIR": str(tmp_path / "run"), "HOME": str(tmp_path / "home")}
    init = subprocess.Popen([*shell, "-c", INIT], env=env)
    try:
        await wait_until(lambda: _catches_term(init.pid), "PID 1's TERM handler")
        init.send_signal(signal.SIGTERM)
        # Reaped here (in a pod its parent reaps it): PID 1 waits until the group is gone.
        assert proc.wait(timeout=10) == 0  # its trap's `exit 0`: TERM reached it
        assert init.wait(timeout=20) == 143  # then PID 1 exits as a TERMed process would
    finally:
        if init.poll() is None:
            init.kill()
            init.wait()
    assert mark.read_text().strip() == "term"


async def test_signal_program_reaches_the_step_group(
    tmp_path: Path, shell: list[str], step: tuple[subprocess.Popen[bytes], Path]
) -> None:
    proc, mark = step
    program = signal_program(0, "TERM")
    env = {**os.environ, "CI_RUN_DIR": str(tmp_path / "run")}
    done = subprocess.run([*shell, "-c", program.decode()], env=env, timeout=20, check=False)
    assert done.returncode == 0
    assert proc.wait(timeout=5) == 0
    assert mark.read_text().strip() == "term"
