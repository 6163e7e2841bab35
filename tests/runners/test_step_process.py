"""A local step's process as app/runners/sandbox.py `StepProcess` runs it: its output, its exit
status as asyncio reports it (negative: the signal), watched through a pidfd or, where pidfds are
missing, a thread."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from app.runners.sandbox import StepProcess


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
