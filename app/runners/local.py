"""The local runner: each step is a subprocess on this machine.

Every step runs as `bash -eo pipefail -c SCRIPT` (or `sh -c SCRIPT`) in the job's workspace
`WORKSPACE_ROOT/<build>/<job>`, through app/runners/sandbox.py: in its job's namespaces (one
bubblewrap sandbox per job) where the machine allows it, else in its own session with a tracking
variable. A cancel or a timeout stops the whole tree (SIGTERM, then SIGKILL after a grace period),
and when the step's main process exits anything it left running is killed too, daemons included,
as a CI user expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import logging
import os
import re
import shutil
import signal
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import unquote

from app.runners.base import (
    JobReporter,
    JobResult,
    JobRun,
    StepOutcome,
    StepRun,
    job_outcome,
    should_run_step,
    step_failure,
)
from app.runners.sandbox import (
    Isolation,
    IsolationSetting,
    Sandbox,
    StepProcess,
    kill_tracked,
    probe_isolation,
)
from app.runners.step_files import (
    INLINE_BYTES,
    look,
    names_in,
    open_temp,
    prepare_files,
    present,
    read_runtime_files,
    small,
)
from app.runners.step_process import step_timeout, wait_step
from app.workflow.invocation import Invocation, Log, Ran
from app.workflow.runtime import MAX_FILE_BYTES, RuntimeFiles

log = logging.getLogger(__name__)

# Output is read up to this much at a time from a pipe widened to _PIPE_SIZE (Linux's default
# 64 KiB pipe made a fast step's 100 MB arrive in ~2,000 reads, each one a pass through the
# masking, command and writer code; with 1 MiB about 500). bench/log_ingest.py measures it.
_READ_SIZE = 1024 * 1024
_PIPE_SIZE = 1024 * 1024
# After the step's processes are killed, output already in the pipe is read for at most this
# long: a process that escaped the kill (it can only in `none` mode) must not hold the step open.
_DRAIN_SECONDS = 5.0


@functools.lru_cache(maxsize=4096)  # asked several times per step (a regex and a sha256)
def job_dir_name(job_name: str) -> str:
    """A filesystem-safe, unique directory name for a job ("test (3.11)" → "test-3.11-1a2b3c4d")."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", job_name).strip("-")[:60] or "job"
    if slug == job_name:
        return slug
    return f"{slug}-{hashlib.sha256(job_name.encode()).hexdigest()[:8]}"


def _exit_code(returncode: int | None) -> int | None:
    """Report death by signal the way shells do (SIGKILL → 137), not as Python's -9."""
    if returncode is not None and returncode < 0:
        return 128 - returncode
    return returncode


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _local_sources(env: dict[str, str]) -> list[Path]:
    """A `file://` repository the build checks out must be readable inside the sandbox."""
    url = env.get("CI_REPO_URL", "")
    if url.startswith("file://") and len(url) > len("file://"):
        return [Path(unquote(url[len("file://") :]))]
    return []


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _bad_directory(cwd: Path, workspace: Path, written: str) -> str | None:
    # An absolute path is taken as it is, as on GitHub (under the sandbox the step sees only what
    # the sandbox shows); a relative one must stay inside the workspace.
    if not Path(written).is_absolute() and not _inside(cwd, workspace.resolve()):
        return f"working-directory '{written}' is outside the workspace\n"
    if not cwd.is_dir():
        return f"working-directory '{written}' does not exist\n"
    return None


def _make_job_dirs(dirs: Iterable[Path], temp: Path, files: dict[str, str]) -> None:
    for path in dirs:
        path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (temp / name).write_text(text)


async def _read_text(path: str, workspace: Path) -> str | None:
    """A local action's action.yml, or None. Steps write the workspace, so a symlink there may
    point anywhere the service can read (its database, its secrets key): the file actually
    opened must lie inside the workspace (checked on the open descriptor, so nothing can swap
    the path in between) and be a regular file (a FIFO would hang the read)."""

    def read() -> str | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        with open(fd, "rb") as handle:
            opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
            if not _inside(opened, workspace.resolve()):
                return None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return handle.read(MAX_FILE_BYTES + 1).decode("utf-8", "replace")

    return await asyncio.to_thread(read)


def _stage(tree: Path, dest: Path) -> None:
    """A copy of an action's tree (from the executor's actions cache) where the job's steps can
    read it; copied, not linked, so a step cannot change the cache. Published by one rename."""
    if tree == dest or dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.{os.getpid()}.{time.monotonic_ns()}"
    shutil.copytree(tree, staging, symlinks=True)
    try:
        os.rename(staging, dest)
    except OSError:  # another job of the build staged it first
        shutil.rmtree(staging, ignore_errors=True)


async def _record_start(reporter: JobReporter, index: int) -> str | None:
    """A step's start, stored; None once committed, else why not. The local runner spawns the
    step meanwhile (docs/logs.md says why no reader can tell): a step whose start cannot be
    stored is stopped and its job ends `error`."""
    try:
        await reporter.step_started(index)
    except Exception as exc:
        log.warning("step %d: %s", index, exc)
        return str(exc) or type(exc).__name__
    return None


_Ran = tuple[StepRun, StepOutcome, int | None, str | None]


class LocalRunner:
    name = "local"
    can_reattach = False

    def __init__(
        self,
        workspace_root: Path,
        *,
        kill_grace_seconds: float = 5.0,
        isolation: IsolationSetting = "none",
        hidden: tuple[Path, ...] = (),
        install_key: str = "",
        sandbox_per: Literal["job", "step"] = "job",
    ) -> None:
        self.workspace_root = workspace_root.resolve()
        self._sandbox_per = sandbox_per
        self.kill_grace_seconds = kill_grace_seconds
        self.isolation_setting: IsolationSetting = isolation
        self._hidden = hidden
        self._install_key = install_key
        # Replaced in start() once the machine has been probed.
        self.sandbox = Sandbox(
            Isolation("none", "not started"), workspace_root=self.workspace_root, hidden=hidden
        )
        self._jobs: dict[int, set[JobRun]] = {}
        # Each running job's wait for its cancel, shared by its steps (one task a job, where a
        # task a step cost a creation and a cancellation, each a pass of the event loop).
        self._cancel_waits: dict[JobRun, asyncio.Task[Literal[True]]] = {}

    async def start(self) -> None:
        self.workspace_root.mkdir(parents=True, exist_ok=True)
        choice = await asyncio.to_thread(probe_isolation, self.isolation_setting)
        self.sandbox = Sandbox(
            choice,
            workspace_root=self.workspace_root,
            hidden=self._hidden,
            install_key=self._install_key,
            per_job=self._sandbox_per == "job",
        )
        log.info("local runner isolation: %s (%s)", choice.mode, choice.reason)

    async def stop(self) -> None:
        for jobs in list(self._jobs.values()):
            for job in jobs:
                job.cancel.set()

    def workspace(self, build_id: int, job_name: str) -> Path:
        return self.workspace_root / str(build_id) / job_dir_name(job_name)

    def temp_dir(self, build_id: int, job_name: str) -> Path:
        """The job's private temp dir (/tmp inside the sandbox), emptied with the workspace."""
        return self.workspace_root / str(build_id) / ".tmp" / job_dir_name(job_name)

    async def cleanup_build(self, build_id: int) -> None:
        """Workspaces are kept for inspection; WORKSPACE_ROOT is the operator's to prune."""

    async def cancel_build(self, build_id: int) -> None:
        for job in self._jobs.get(build_id, ()):
            job.cancel.set()

    async def sweep_orphans(
        self,
        finished_build_ids: Callable[[list[int]], Awaitable[set[int]]],  # noqa: ARG002 (protocol)
    ) -> list[str]:
        """Nothing outlives a local build: its processes died with it (or with the replica)."""
        return []

    async def run_job(
        self, job: JobRun, reporter: JobReporter, *, resume: bool = False
    ) -> JobResult:
        if resume:
            # Our processes die with the executor that started them (bwrap --die-with-parent);
            # without namespaces, kill what carries the build's tracking id on this machine.
            killed = await self.sandbox.reap_build(job.build_id)
            if killed:
                log.warning("killed %d leftover process(es) of build %s", killed, job.build_id)
            return JobResult(
                "error", "the executor running this job stopped; its processes are gone"
            )
        self._jobs.setdefault(job.build_id, set()).add(job)
        # Under namespaces the job's steps share one sandbox (app/runners/job_sandbox.py).
        workspace = self.workspace(job.build_id, job.job_name)
        track = self.sandbox.track_id(job.build_id, workspace.name)
        self.sandbox.open_job(workspace, track, len(job.steps))
        self._cancel_waits[job] = asyncio.create_task(job.cancel.wait())
        try:
            return await self._run(job, reporter)
        finally:
            self._cancel_waits.pop(job).cancel()
            self.sandbox.close_job(workspace)
            jobs = self._jobs.get(job.build_id)
            if jobs is not None:
                jobs.discard(job)
                if not jobs:
                    del self._jobs[job.build_id]

    async def _run(self, job: JobRun, reporter: JobReporter) -> JobResult:
        if job.services:
            # Sidecars need a container runtime; the kubernetes runner runs them in the job's pod.
            for step in job.steps:
                await reporter.step_finished(step.index, "skipped", None)
            names = ", ".join(s.name for s in job.services)
            return JobResult(
                "failed",
                f"`services:` ({names}) need the kubernetes runner; the local runner cannot run "
                "service containers",
            )
        workspace, _ = await self._directories(job)
        deadline = time.monotonic() + job.timeout_seconds if job.timeout_seconds else None
        finished: dict[int, StepOutcome] = {}
        ran: list[StepRun] = []  # as they ran (continue-on-error evaluated)
        failed = False
        outcome: JobResult | None = None
        for step in job.steps:
            if outcome is None and job.cancel.is_set():
                outcome = JobResult("cancelled")
            if outcome is not None:  # the job already ended (cancel, timeout, error)
                await self._skip(job, step, reporter)
                continue
            if job.runtime is None:
                result = await self._plain_step(job, step, workspace, reporter, deadline, failed)
            else:
                result = await self._session(job, step, workspace, reporter, deadline)
            if result is None:
                await reporter.step_finished(step.index, "skipped", None)
                continue
            run, status, code, message = result
            await reporter.step_finished(step.index, status, code, message)
            finished[step.index] = status
            ran.append(run)
            if status == "cancelled":
                outcome = JobResult("cancelled")
            elif status == "timed_out" and deadline is not None and time.monotonic() >= deadline:
                outcome = JobResult(
                    "timed_out", f"job exceeded its timeout of {job.timeout_seconds:g}s"
                )
            elif status == "error":
                outcome = JobResult("error", message)
            elif step_failure(run, status) is not None:
                failed = True
        if outcome is not None:
            return outcome
        return job_outcome(ran, finished)

    async def _plain_step(
        self,
        job: JobRun,
        step: StepRun,
        workspace: Path,
        reporter: JobReporter,
        deadline: float | None,
        failed: bool,
    ) -> _Ran | None:
        """A step without GitHub semantics (no runtime): its `if:`, then its script inline."""
        if not should_run_step(step, failed=failed, cancelled=False):
            return None
        started = asyncio.ensure_future(_record_start(reporter, step.index))
        try:
            status, code, message = await self._run_step(
                job, step, workspace, reporter, deadline, started=started
            )
        finally:
            problem = await started
        if problem is not None:
            status, code, message = "error", None, problem
        return step, status, code, message

    async def _session(
        self,
        job: JobRun,
        step: StepRun,
        workspace: Path,
        reporter: JobReporter,
        deadline: float | None,
    ) -> _Ran | None:
        """A step as the runtime's sequence of requests (app/workflow/session.py); None when
        it was skipped."""
        assert job.runtime is not None
        session = job.runtime.session(step, base_path=os.environ.get("PATH", "/usr/bin:/bin"))
        request = session.send(None)
        if request is None:
            return None
        # The step's start commits while its files are prepared and its process runs (see
        # _record_start); its output and end are stored after it all the same.
        started = asyncio.ensure_future(_record_start(reporter, step.index))
        try:
            while request is not None:
                reply: Any = None
                if isinstance(request, Invocation):
                    reply = await self._invoke(
                        job, step, request, workspace, reporter, deadline, started
                    )
                elif isinstance(request, Log):
                    await reporter.step_output(step.index, request.text.encode())
                else:
                    reply = await session.load(
                        request, functools.partial(_read_text, workspace=workspace)
                    )
                request = session.send(reply)
        finally:
            problem = await started
        end = session.end
        run = dataclasses.replace(step, continue_on_error=end.continue_on_error)
        if problem is not None:
            return run, "error", None, problem
        return run, cast(StepOutcome, end.status), end.exit_code, end.message

    async def _invoke(
        self,
        job: JobRun,
        step: StepRun,
        request: Invocation,
        workspace: Path,
        reporter: JobReporter,
        deadline: float | None,
        started: asyncio.Future[str | None],
    ) -> Ran:
        """One process of a step, its runtime files created before and read back after; the
        process stopped if `started` (the step's start, see _record_start) fails."""
        temp = self.temp_dir(job.build_id, job.job_name)
        try:
            folder = open_temp(self.workspace_root / str(job.build_id), temp)
        except OSError as exc:
            return Ran("error", None, message=f"the job's temp dir is not usable: {exc}")
        try:
            return await self._invoke_in(
                job, step, request, workspace, reporter, deadline, folder, started
            )
        finally:
            os.close(folder)

    async def _invoke_in(
        self,
        job: JobRun,
        step: StepRun,
        request: Invocation,
        workspace: Path,
        reporter: JobReporter,
        deadline: float | None,
        folder: int,
        started: asyncio.Future[str | None],
    ) -> Ran:
        """_invoke with the job's temp dir open as `folder`."""
        try:
            names = names_in(self.temp_dir(job.build_id, job.job_name), request.files)
            prepare = (folder, names.values(), request.script_name, request.script)
            # Creating a file costs ~0.5 ms of kernel CPU on the bench machine's ext4, six for
            # a job's first step: that one prepares in a worker thread, alongside its durable
            # start, instead of holding the event loop (every other build's work) ~3 ms.
            needed = [*names.values(), request.script_name] if request.script else names.values()
            found = look(folder, needed)
            if len(request.script) <= INLINE_BYTES and present(found):
                prepare_files(*prepare, found)
            else:
                await asyncio.to_thread(prepare_files, *prepare)
        except OSError as exc:
            return Ran("error", None, message=f"could not prepare the step's files: {exc}")
        program = request.argv[0] if request.argv else ""
        if not shutil.which(program, path=request.env.get("PATH") or os.defpath):
            # The user's choice of shell (or action), not an infrastructure failure.
            return Ran("failed", None, message=request.missing)
        if request.label:
            await reporter.step_output(step.index, f"{request.label}\n".encode())
        run = dataclasses.replace(
            step,
            script=request.script,
            env=request.env,
            working_directory=request.working_directory,
            timeout_seconds=request.timeout_seconds,
        )
        runtime = job.runtime
        assert runtime is not None
        for tree in request.readable:
            await asyncio.to_thread(_stage, Path(tree), Path(runtime.step_path(Path(tree))))
        status, code, message = await self._run_step(
            job, run, workspace, reporter, deadline, argv=request.argv, started=started
        )
        found = look(folder, names.values())
        if small(found):
            texts = read_runtime_files(folder, names, found)
        else:
            texts = await asyncio.to_thread(read_runtime_files, folder, names)
        return Ran(status, code, texts, message)

    async def _directories(self, job: JobRun) -> tuple[Path, Path]:
        """The job's workspace and RUNNER_TEMP. RUNNER_TEMP and the tool cache live inside the
        build's directory, which the sandbox shows at the same path (its /tmp is private)."""
        workspace = self.workspace(job.build_id, job.job_name)
        temp = self.temp_dir(job.build_id, job.job_name)
        tool_cache = self.workspace_root / str(job.build_id) / "_tool"
        files: dict[str, str] = {}
        if job.runtime is not None:
            job.runtime.reuse_files = not self.can_reattach
            files = job.runtime.start(
                workspace=str(workspace),
                temp=str(temp),
                tool_cache=str(tool_cache),
                # Action trees are copied into the build's directory, which the sandbox shows.
                actions_dir=str(self.workspace_root / str(job.build_id) / "_actions"),
            )
        # One trip to a worker thread for all of it (each trip costs a thread handoff).
        await asyncio.to_thread(_make_job_dirs, (workspace, temp, tool_cache), temp, files)
        return workspace, temp

    async def _skip(self, job: JobRun, step: StepRun, reporter: JobReporter) -> None:
        if job.runtime is not None:
            job.runtime.finish(step.index, "skipped", RuntimeFiles(), continue_on_error=False)
        await reporter.step_finished(step.index, "skipped", None)

    async def _run_step(
        self,
        job: JobRun,
        step: StepRun,
        workspace: Path,
        reporter: JobReporter,
        job_deadline: float | None,
        argv: Sequence[str] | None = None,
        started: asyncio.Future[str | None] | None = None,
    ) -> tuple[StepOutcome, int | None, str | None]:
        """One process of a step, waited for; stopped on cancel, timeout or a start not stored."""
        cwd = workspace
        if step.working_directory:
            cwd = (workspace / step.working_directory).resolve()
            problem = _bad_directory(cwd, workspace, step.working_directory)
            if problem is not None:
                await reporter.step_output(step.index, problem.encode())
                return "failed", None, None
        if argv is None:  # without a runtime: the script inline
            argv = ["bash", "-eo", "pipefail", "-c", step.script]
            if step.shell == "sh":
                argv = ["sh", "-c", step.script]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workspace)}
        env.update({"LANG": "C.UTF-8"})
        env.update(step.env)
        env["CI_WORKSPACE"] = str(workspace)
        if started is not None and started.done() and (problem := started.result()) is not None:
            return "error", None, problem  # refused already: nothing is spawned
        track = self.sandbox.track_id(job.build_id, workspace.name, step.index)
        try:
            proc = await self.sandbox.spawn(
                argv,
                cwd=cwd,
                env=env,
                workspace=workspace,
                tmpdir=self.temp_dir(job.build_id, job.job_name),
                track=track,
                readable=_local_sources(env),
            )
        except OSError as exc:
            return "error", None, f"could not start {argv[0]}: {exc}"
        assert proc.stdout is not None
        pump = asyncio.create_task(self._pump(proc.stdout, step.index, reporter))
        waiter: asyncio.Future[Any] = proc.exit()
        canceller: asyncio.Future[Any] = self._cancel_waits[job]
        timeout = step_timeout(step.timeout_seconds, job_deadline)
        try:
            done, problem = await wait_step(waiter, canceller, started, timeout)
            if problem is not None:
                await self._terminate(proc, track)
                await self._drain(pump)
                return "error", None, problem
            if waiter in done:
                status: StepOutcome = "success" if proc.returncode == 0 else "failed"
                code = _exit_code(proc.returncode)
                # Whatever the step left running (daemons too) ends with it, and stops holding
                # the output pipe open.
                await self.sandbox.kill(proc, track)
                await self._drain(pump)
                if proc.lost is not None:  # its job sandbox died: not the step's doing
                    return "error", None, proc.lost
                return status, code, None
            status = "cancelled" if canceller in done else "timed_out"
            await self._terminate(proc, track)
            if status == "timed_out":
                limit = timeout or 0
                await reporter.step_output(
                    step.index, f"\nstep timed out after {limit:g}s; killed\n".encode()
                )
            await self._drain(pump)
            return status, _exit_code(proc.returncode), None
        finally:
            if not waiter.done():
                _kill_group(proc.pid, signal.SIGKILL)
                if self.sandbox.mode == "none":
                    kill_tracked(track)
                waiter.cancel()
            if not pump.done():
                pump.cancel()
            proc.close()

    async def _terminate(self, proc: StepProcess, track: str) -> None:
        await self.sandbox.terminate(proc, track, self.kill_grace_seconds)

    async def _drain(self, pump: asyncio.Task[None]) -> None:
        """Wait for the output already written, bounded: see _DRAIN_SECONDS."""
        done, _ = await asyncio.wait({pump}, timeout=_DRAIN_SECONDS)
        if not done:
            log.warning("a step's output pipe stayed open after its processes were killed")
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _pump(self, stream: asyncio.StreamReader, index: int, reporter: JobReporter) -> None:
        _widen_pipe(stream)
        while data := await stream.read(_READ_SIZE):
            await reporter.step_output(index, data)


def _widen_pipe(stream: asyncio.StreamReader) -> None:
    """Best effort: the pipe keeps its default size where this is refused (over the user's
    pipe-user-pages limit, or a reader without a pipe transport)."""
    transport = getattr(stream, "_transport", None)  # asyncio offers no public accessor
    pipe = transport.get_extra_info("pipe") if transport is not None else None
    if pipe is not None:
        with contextlib.suppress(OSError, ValueError):
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
