"""A job's steps in one bubblewrap sandbox (app/runners/job_sandbox.py), driven through
app/runners/sandbox.py as the local runner drives it: real bwrap, real processes, no database.

What a sandbox per step guaranteed must still hold between the steps of one job: nothing a step
starts is alive when the next one starts, a step cannot stop or read the launcher (PID 1), cancel
and timeout terminate then kill, a dead launcher is an infrastructure error, and the mounts are
those a per-step sandbox would have had (another build's files stay out of sight)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.runners.job_sandbox import JobStep
from app.runners.sandbox import Sandbox, StepProcess, probe_isolation
from tests.helpers import pids_with, wait_until

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is missing")


@dataclass
class Job:
    sandbox: Sandbox
    workspace: Path
    tmp: Path

    async def start(self, script: str, *, readable: tuple[Path, ...] = ()) -> StepProcess:
        return await self.sandbox.spawn(
            ["bash", "-c", script],
            cwd=self.workspace,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            workspace=self.workspace,
            tmpdir=self.tmp,
            track="test/1/job/0/",
            readable=readable,
        )

    async def run(self, script: str, *, readable: tuple[Path, ...] = ()) -> tuple[int, str]:
        """One step to its end, as the runner ends it (wait, then kill what is left)."""
        proc = await self.start(script, readable=readable)
        output = await proc.stdout.read()
        code = await proc.wait()
        await self.sandbox.kill(proc, "test/1/job/0/")
        proc.close()
        return code, output.decode()


def _sandbox(tmp_path: Path, hidden: tuple[Path, ...] = ()) -> Sandbox:
    choice = probe_isolation("namespaces")
    return Sandbox(choice, workspace_root=tmp_path / "ws", hidden=(*hidden, Path.cwd()))


async def _open(sandbox: Sandbox, tmp_path: Path, build: int, steps: int = 3) -> Job:
    workspace = tmp_path / "ws" / str(build) / "job"
    workspace.mkdir(parents=True)
    sandbox.open_job(workspace, f"test/{build}/", steps)
    return Job(sandbox, workspace, tmp_path)


@pytest.fixture
async def job(tmp_path: Path) -> AsyncIterator[Job]:
    sandbox = _sandbox(tmp_path)
    opened = await _open(sandbox, tmp_path, 1)
    yield opened
    sandbox.close_job(opened.workspace)


def _box(proc: StepProcess) -> int:
    assert isinstance(proc, JobStep), "the step did not run in a job sandbox"
    return proc.box.pid


async def _line(proc: StepProcess) -> str:
    return (await proc.stdout.readline()).decode()


def _launcher(proc: StepProcess) -> int:
    """The launcher's host pid: the child of the sandbox's bwrap."""
    bwrap = _box(proc)
    with os.scandir("/proc") as entries:
        names = [e.name for e in entries if e.name.isdigit()]
    for name in names:
        try:
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        if f"\nPPid:\t{bwrap}\n" in status:
            return int(name)
    raise AssertionError("no launcher under the job's bwrap")


async def test_steps_share_one_sandbox_and_the_launcher_is_pid_1(job: Job) -> None:
    first = await job.start("echo $$; cat /proc/1/cmdline | tr '\\0' ' '")
    out = (await first.stdout.read()).decode()
    assert await first.wait() == 0
    second = await job.start("exit 3")
    assert await second.wait() == 3
    assert _box(first) == _box(second)
    assert "-I -S -" in out  # PID 1 is the launcher, the step is not
    assert out.split()[0] != "1"


async def test_a_background_process_is_dead_before_the_next_step_starts(job: Job) -> None:
    marker = f"600.{uuid.uuid4().int % 10**9}"
    code, out = await job.run(f"setsid sleep {marker} & sleep {marker}1 & echo started")
    assert (code, out) == (0, "started\n")
    # The exit is reported once the launcher killed and reaped everything: nothing to wait for.
    assert pids_with(f"sleep {marker}") == []
    code, out = await job.run(
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done"
        f" | grep -c '[s]leep {marker}' || true; ls /proc | grep -c '^[0-9]'"
    )
    assert code == 0
    count, processes = out.split()
    assert count == "0"
    # The launcher, this bash, its ls and grep (and the subshell of the pipe, if any).
    assert int(processes) <= 5, out


async def test_a_step_cannot_stop_or_inspect_the_launcher(job: Job) -> None:
    code, out = await job.run(
        """
        for sig in KILL TERM INT HUP QUIT USR1 STOP; do kill -s $sig 1 && echo "sent $sig"; done
        cat /proc/1/environ || echo no-environ
        head -c 1 /proc/1/mem || echo no-mem
        ls /proc/1/fd/ >/dev/null 2>&1 && readlink /proc/1/fd/* || echo no-fds
        """
    )
    assert "sent KILL" in out  # the kernel accepts it and drops it: PID 1 has no handler
    assert "no-environ" in out and "no-mem" in out and "no-fds" in out
    before = job.sandbox._jobs[job.workspace].box
    code, out = await job.run("echo still-here")
    assert (code, out) == (0, "still-here\n")
    assert job.sandbox._jobs[job.workspace].box is before  # the same launcher ran it


async def test_terminate_sends_term_then_kills(job: Job) -> None:
    marker = f"600.{uuid.uuid4().int % 10**9}"
    polite = await job.start(
        f"trap 'echo got-term; exit 5' TERM; setsid sleep {marker} & echo up; sleep 300 & wait"
    )
    assert await _line(polite) == "up\n"
    await job.sandbox.terminate(polite, "test/1/job/0/", grace_seconds=30)
    assert await polite.wait() == 5
    assert "got-term" in (await polite.stdout.read()).decode()
    assert pids_with(f"sleep {marker}") == []
    stubborn = await job.start("trap '' TERM; echo up; while :; do sleep 0.05; done")
    assert await _line(stubborn) == "up\n"
    await job.sandbox.terminate(stubborn, "test/1/job/0/", grace_seconds=0.2)
    assert await stubborn.wait() == -signal.SIGKILL
    assert stubborn.lost is None  # the step's end, not the sandbox's
    assert (await job.run("echo next"))[1] == "next\n"


async def test_a_killed_launcher_is_an_infrastructure_error_and_the_next_step_gets_a_new_one(
    job: Job,
) -> None:
    proc = await job.start("echo up; sleep 300")
    assert await _line(proc) == "up\n"
    os.kill(_launcher(proc), signal.SIGKILL)
    await proc.wait()
    assert proc.lost is not None
    assert await proc.stdout.read() == b""  # the namespace died with it: the pipe closed
    proc.close()
    after = await job.start("echo fresh")
    assert (await after.stdout.read(), await after.wait()) == (b"fresh\n", 0)
    assert after.lost is None
    assert _box(after) != _box(proc)


async def test_a_launcher_dead_between_steps_is_replaced(job: Job) -> None:
    proc = await job.start("true")
    assert await proc.wait() == 0
    os.kill(_launcher(proc), signal.SIGKILL)
    code, out = await job.run("echo fresh")
    assert (code, out) == (0, "fresh\n")


async def test_a_step_cannot_read_another_running_builds_files(tmp_path: Path) -> None:
    sandbox = _sandbox(tmp_path)
    mine, other = await _open(sandbox, tmp_path, 1), await _open(sandbox, tmp_path, 2)
    try:
        holder = await other.start("echo private-data > secret.txt; echo up; sleep 300")
        assert await _line(holder) == "up\n"
        _, out = await mine.run(f"cat {other.workspace}/secret.txt || echo not-readable")
        assert "private-data" not in out and "not-readable" in out
        await sandbox.kill(holder, "")
        await holder.wait()
        holder.close()
    finally:
        sandbox.close_job(mine.workspace)
        sandbox.close_job(other.workspace)


async def test_the_mounts_follow_each_step(tmp_path: Path) -> None:
    """A step's `readable` paths, and hidden files that appear during the job, are what a
    per-step sandbox would have shown: the job's sandbox is replaced when they change."""
    database = tmp_path / "service" / "ci.db"
    sandbox = _sandbox(tmp_path, hidden=(database,))
    job = await _open(sandbox, tmp_path, 1)
    # Not under /tmp (shown to every step): /var/tmp is an empty tmpfs in the sandbox.
    source = Path(tempfile.mkdtemp(dir="/var/tmp"))
    (source / "README").write_text("repo-text\n")
    database.parent.mkdir()
    try:
        assert (await job.run(f"cat {source}/README", readable=(source,)))[1] == "repo-text\n"
        _, out = await job.run(f"cat {source}/README || echo hidden")
        assert "repo-text" not in out and "hidden" in out
        database.write_text("db-secret")  # created while the job runs
        (tmp_path / "service" / "ci.db-wal").write_text("wal-secret")
        _, out = await job.run(f"cat {database} {database}-wal; echo done")
        assert "secret" not in out and "done" in out
    finally:
        sandbox.close_job(job.workspace)
        shutil.rmtree(source)


async def test_a_missing_program_raises_and_the_sandbox_lives_on(job: Job) -> None:
    with pytest.raises(FileNotFoundError):
        await job.sandbox.spawn(
            ["no-such-program-here"],
            cwd=job.workspace,
            env={"PATH": "/usr/bin:/bin"},
            workspace=job.workspace,
            tmpdir=job.tmp,
            track="test/1/job/0/",
        )
    assert (await job.run("echo ok"))[1] == "ok\n"


async def test_an_error_message_of_any_characters_reaches_the_service(job: Job) -> None:
    """The launcher's JSON of the error, with quotes, backslashes and non-ASCII in it."""
    name = 'no "such" program\n-é-😀'
    with pytest.raises(FileNotFoundError) as caught:
        await job.sandbox.spawn(
            [name],
            cwd=job.workspace,
            env={"PATH": "/usr/bin:/bin"},
            workspace=job.workspace,
            tmpdir=job.tmp,
            track="test/1/job/0/",
        )
    assert repr(name) in str(caught.value)
    before = job.sandbox._jobs[job.workspace].box
    assert (await job.run("echo ok"))[1] == "ok\n"
    assert job.sandbox._jobs[job.workspace].box is before


async def test_a_closed_job_leaves_nothing_behind(tmp_path: Path) -> None:
    sandbox = _sandbox(tmp_path)
    job = await _open(sandbox, tmp_path, 1)
    proc = await job.start("true")
    await proc.wait()
    bwrap = _box(proc)
    sandbox.close_job(job.workspace)

    def gone() -> bool:
        try:
            return "State:\tZ" in Path(f"/proc/{bwrap}/status").read_text()
        except FileNotFoundError:
            return True  # exited and reaped

    await wait_until(gone, "the job sandbox's bwrap to exit")


async def test_a_large_command_and_environment_arrive_whole(job: Job) -> None:
    # Far over a socket buffer: the order is framed and sent in pieces.
    script = "echo ${#BIG1} ${#BIG2}; : " + "x" * 120_000
    big = {f"BIG{i}": str(i) * 120_000 for i in (1, 2)}
    proc = await job.sandbox.spawn(
        ["bash", "-c", script],
        cwd=job.workspace,
        env={"PATH": "/usr/bin:/bin", **big},
        workspace=job.workspace,
        tmpdir=job.tmp,
        track="test/1/job/0/",
    )
    assert await proc.stdout.read() == b"120000 120000\n"
    assert await proc.wait() == 0


async def test_exit_codes_directory_and_signals_as_before(job: Job) -> None:
    (job.workspace / "sub").mkdir()
    proc = await job.sandbox.spawn(
        ["sh", "-c", 'pwd; echo "$TMPDIR"; echo err >&2; kill -9 $$'],
        cwd=job.workspace / "sub",
        env={"PATH": "/usr/bin:/bin"},
        workspace=job.workspace,
        tmpdir=job.tmp,
        track="test/1/job/0/",
    )
    assert await proc.stdout.read() == f"{job.workspace}/sub\n{job.tmp}\nerr\n".encode()
    assert await proc.wait() == -signal.SIGKILL
    assert proc.lost is None


async def test_an_unspawnable_command_is_refused_and_the_sandbox_lives_on(job: Job) -> None:
    for env in ({"PATH": "/usr/bin:/bin", "BAD": "nul\0byte"}, {"PATH": "/usr/bin", "X": "\ud800"}):
        with pytest.raises(OSError, match=r"null|encode"):
            await job.sandbox.spawn(
                ["true"],
                cwd=job.workspace,
                env=env,
                workspace=job.workspace,
                tmpdir=job.tmp,
                track="test/1/job/0/",
            )
    before = job.sandbox._jobs[job.workspace].box
    assert (await job.run("echo ok"))[1] == "ok\n"
    assert job.sandbox._jobs[job.workspace].box is before


@pytest.mark.parametrize("why", ["LOCAL_SANDBOX=step", "no visible Python", "a one-step job"])
async def test_a_sandbox_per_step_when_asked_or_when_no_launcher_can_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    sandbox = Sandbox(
        probe_isolation("namespaces"),
        workspace_root=tmp_path / "ws",
        hidden=(Path.cwd(),),
        per_job=why != "LOCAL_SANDBOX=step",
    )
    if why == "no visible Python":
        monkeypatch.setattr(sandbox, "_launcher_python", lambda: None)
    job = await _open(sandbox, tmp_path, 1, steps=1 if why == "a one-step job" else 3)
    try:
        marker = f"600.{uuid.uuid4().int % 10**9}"
        proc = await job.start(f"setsid sleep {marker} & echo $$")
        assert not isinstance(proc, JobStep)
        assert (await proc.stdout.read()).strip() in (b"1", b"2")  # PID 1 or bwrap's child
        assert await proc.wait() == 0
        await sandbox.kill(proc, "test/1/job/0/")
        proc.close()
        await wait_until(lambda: not pids_with(f"sleep {marker}"), "the daemon to die")
    finally:
        sandbox.close_job(job.workspace)
