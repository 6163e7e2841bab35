"""A local step's process as app/runners/sandbox.py `StepProcess` runs it: its output, its exit
status as asyncio reports it (negative: the signal), watched through a pidfd or, where pidfds are
missing, a thread."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.runners.sandbox import Isolation, Sandbox, StepProcess
from app.runners.step_process import spawn


@pytest.fixture(params=["pidfd", "thread"])
def watch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with the exit watched by a pidfd, then by a thread."""
    if request.param == "thread":

        def no_pidfd(_pid: int) -> int:
            raise OSError(38, "Function not implemented")

        monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    return str(request.param)


async def start(script: str, tmp_path: Path) -> StepProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return await StepProcess.start(["sh", "-c", script], cwd=tmp_path, env=env)


@pytest.mark.usefixtures("watch")
async def test_output_and_exit_code(tmp_path: Path) -> None:
    proc = await start("pwd; echo err >&2; exit 3", tmp_path)
    assert proc.stdout is not None
    assert await proc.stdout.read() == f"{tmp_path}\nerr\n".encode()
    assert await proc.wait() == 3
    assert proc.returncode == 3
    proc.close()


@pytest.mark.usefixtures("watch")
async def test_death_by_signal_is_negative(tmp_path: Path) -> None:
    proc = await start("kill -9 $$", tmp_path)
    assert await proc.wait() == -9
    proc.close()


@pytest.mark.usefixtures("watch")
async def test_a_cancelled_wait_loses_nothing(tmp_path: Path) -> None:
    proc = await start("read -r line; exit 7", tmp_path)  # stdin is /dev/null: exits at once
    waiter = asyncio.create_task(proc.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    assert await proc.wait() == 7
    proc.close()


async def test_a_missing_program_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await StepProcess.start(["/nonexistent/program"], cwd=tmp_path, env={})


async def _spawned(tmp_path: Path, argv: list[str], path: str) -> bytes:
    """Run through Sandbox.spawn without a sandbox (where the PATH lookup happens)."""
    sandbox = Sandbox(Isolation("none", "test"), workspace_root=tmp_path)
    proc = await sandbox.spawn(
        argv,
        cwd=tmp_path / "ws",
        env={"PATH": path},
        workspace=tmp_path,
        tmpdir=tmp_path,
        track="t/1/",
    )
    assert proc.stdout is not None
    out = await proc.stdout.read()
    assert await proc.wait() == 0
    proc.close()
    return out


def _tool(directory: Path, name: str, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(f"#!/bin/sh\necho {text}\n")
    (directory / name).chmod(0o755)


async def test_the_program_is_the_first_on_the_steps_path(tmp_path: Path) -> None:
    """Looked up once on the step's own PATH (not the service's), first entry first; the
    process still sees argv[0] as given."""
    (tmp_path / "ws").mkdir()
    _tool(tmp_path / "late", "tool", "late")
    assert await _spawned(tmp_path, ["tool"], f"/nonexistent:{tmp_path}/late") == b"late\n"
    _tool(tmp_path / "early", "tool", "early")
    path = f"{tmp_path}/early:{tmp_path}/late"
    assert await _spawned(tmp_path, ["tool"], path) == b"early\n"
    argv = ["bash", "-c", 'tr "\\0" " " < /proc/$$/cmdline']
    assert await _spawned(tmp_path, argv, os.environ["PATH"]) == f"{' '.join(argv)} ".encode()


async def test_a_relative_path_entry_is_the_steps_directory(tmp_path: Path) -> None:
    """`bin` on the PATH means the step's directory's bin, as the child resolves it."""
    _tool(tmp_path / "ws" / "bin", "tool", "step-dir")
    assert await _spawned(tmp_path, ["tool"], f"bin:{os.defpath}") == b"step-dir\n"


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within 10 s: {what}")
        await asyncio.sleep(0.01)


async def test_a_spawn_given_up_is_killed_and_reaped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker thread finishes a spawn whatever happens to its caller: cancelled meanwhile,
    the process it started is killed (its whole session) and its exit collected, and `then`
    (the caller's inherited files closed) still runs."""
    started: list[subprocess.Popen[bytes]] = []

    class Recorded(subprocess.Popen[bytes]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    settled = asyncio.Event()
    task = asyncio.create_task(spawn(["sleep", "300"], then=settled.set, stdout=subprocess.PIPE))
    await asyncio.sleep(0)  # handed to the thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(settled.wait(), 10)
    [popen] = started
    await _until(lambda: popen.returncode is not None, "the process reaped")
    assert popen.returncode == -signal.SIGKILL
    assert popen.stdout is not None and popen.stdout.closed


async def test_a_failed_spawn_raises_and_still_runs_then() -> None:
    settled = asyncio.Event()
    with pytest.raises(FileNotFoundError):
        await spawn(["/nonexistent/program"], then=settled.set)
    assert settled.is_set()


async def test_popen_is_called_off_the_event_loop_in_a_new_session() -> None:
    """A spawn's vfork waits for the child's exec, which on a loaded machine waits for a CPU:
    the thread that calls Popen is a worker, never the event loop's."""
    spawning_thread: list[int] = []

    class Recorded(subprocess.Popen[bytes]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            spawning_thread.append(threading.get_ident())
            super().__init__(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", Recorded)
        popen = await spawn(["sleep", "300"], stdout=subprocess.DEVNULL)
    try:
        assert spawning_thread
        assert spawning_thread[0] != threading.get_ident()
        # A session of its own, unasked: what a given-up spawn's kill of its group relies on.
        assert os.getsid(popen.pid) == popen.pid
    finally:
        popen.kill()
        await asyncio.to_thread(popen.wait)
