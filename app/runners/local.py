"""The local runner: each step is a subprocess on this machine.

Every step runs as `bash -eo pipefail -c SCRIPT` (or `sh -c SCRIPT`) in the job's workspace
`WORKSPACE_ROOT/<build>/<job>`, in a new session (its own process group), so a cancel or a timeout
can kill the whole tree: SIGTERM to the group, then SIGKILL after a grace period. When the step's
main process exits, anything it left running in its group is killed too, as a CI user expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

from app.runners.base import (
    JobReporter,
    JobResult,
    JobRun,
    StepOutcome,
    StepRun,
    should_run_step,
)
from app.workflow.runtime import MAX_FILE_BYTES, OUTPUT_FILES, JobRuntime, RuntimeFiles

log = logging.getLogger(__name__)

_READ_SIZE = 64 * 1024


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


def _runtime_paths(temp: Path, index: int) -> dict[str, Path]:
    return {name: temp / f"{name.lower()}-{index}" for name in OUTPUT_FILES}


def _create_empty(paths: Iterable[Path]) -> None:
    for path in paths:
        path.write_bytes(b"")


def _read_runtime_files(temp: Path, index: int) -> RuntimeFiles:
    """The step's runtime files, each read up to MAX_FILE_BYTES (a step cannot make the service
    hold an arbitrarily large file in memory)."""
    texts: dict[str, str] = {}
    for name, path in _runtime_paths(temp, index).items():
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_FILE_BYTES)
        except OSError:
            data = b""
        texts[name] = data.decode("utf-8", "replace")
    return RuntimeFiles(
        output=texts["GITHUB_OUTPUT"],
        env=texts["GITHUB_ENV"],
        path=texts["GITHUB_PATH"],
        summary=texts["GITHUB_STEP_SUMMARY"],
    )


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class LocalRunner:
    name = "local"
    can_reattach = False

    def __init__(self, workspace_root: Path, *, kill_grace_seconds: float = 5.0) -> None:
        self.workspace_root = workspace_root.resolve()
        self.kill_grace_seconds = kill_grace_seconds
        self._jobs: dict[int, set[JobRun]] = {}

    async def start(self) -> None:
        self.workspace_root.mkdir(parents=True, exist_ok=True)

    async def stop(self) -> None:
        for jobs in list(self._jobs.values()):
            for job in jobs:
                job.cancel.set()

    def workspace(self, build_id: int, job_name: str) -> Path:
        return self.workspace_root / str(build_id) / job_dir_name(job_name)

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
            # Our processes died with the executor that started them; nothing to re-attach to.
            return JobResult(
                "error", "the executor running this job stopped; its processes are gone"
            )
        self._jobs.setdefault(job.build_id, set()).add(job)
        try:
            return await self._run(job, reporter)
        finally:
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
        workspace = self.workspace(job.build_id, job.job_name)
        temp = self.workspace_root / str(job.build_id) / "_temp" / workspace.name
        tool_cache = self.workspace_root / "_tool"
        for path in (workspace, temp, tool_cache):
            await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
        if job.runtime is not None:
            files = job.runtime.start(
                workspace=str(workspace), temp=str(temp), tool_cache=str(tool_cache)
            )
            for name, text in files.items():
                await asyncio.to_thread((temp / name).write_text, text)
        deadline = time.monotonic() + job.timeout_seconds if job.timeout_seconds else None
        failed = False
        failure: JobResult = JobResult("failed")
        outcome: JobResult | None = None
        for step in job.steps:
            if outcome is not None:  # the job already ended (cancel, timeout, error)
                await self._skip(job, step, reporter)
                continue
            cancelled = job.cancel.is_set()
            if cancelled:
                await self._skip(job, step, reporter)
                outcome = JobResult("cancelled")
                continue
            if job.runtime is None:
                run: StepRun | None = step
                if not should_run_step(step, failed=failed, cancelled=False):
                    run = None
                argv: tuple[str, ...] | None = None
                error: str | None = None
            else:
                run, argv, error = await self._prepare(job.runtime, step, temp)
            if run is None:
                await self._skip(job, step, reporter)
                continue
            await reporter.step_started(step.index)
            if error is not None:
                await reporter.step_output(step.index, f"{error}\n".encode())
                status: StepOutcome = "failed"
                code, message = None, None
            else:
                status, code, message = await self._run_step(
                    job, run, workspace, reporter, deadline, argv=argv
                )
            if job.runtime is not None:
                problem = job.runtime.finish(
                    step.index,
                    status,
                    await asyncio.to_thread(_read_runtime_files, temp, step.index),
                    continue_on_error=run.continue_on_error,
                )
                if problem is not None:
                    await reporter.step_output(step.index, f"{problem}\n".encode())
                    status = "failed" if status == "success" else status
            await reporter.step_finished(step.index, status, code, message)
            if status == "cancelled":
                outcome = JobResult("cancelled")
            elif status == "timed_out" and deadline is not None and time.monotonic() >= deadline:
                outcome = JobResult(
                    "timed_out", f"job exceeded its timeout of {job.timeout_seconds:g}s"
                )
            elif status == "error":
                outcome = JobResult("error", message)
            elif status in ("failed", "timed_out") and not run.continue_on_error:
                if not failed and status == "timed_out":
                    failure = JobResult(
                        "timed_out", f"step {step.index + 1} ({step.name}) timed out"
                    )
                failed = True
        if outcome is not None:
            return outcome
        return failure if failed else JobResult("success")

    async def _skip(self, job: JobRun, step: StepRun, reporter: JobReporter) -> None:
        if job.runtime is not None:
            job.runtime.finish(step.index, "skipped", RuntimeFiles(), continue_on_error=False)
        await reporter.step_finished(step.index, "skipped", None)

    async def _prepare(
        self, runtime: JobRuntime, step: StepRun, temp: Path
    ) -> tuple[StepRun | None, tuple[str, ...] | None, str | None]:
        """The step as it runs now (expressions evaluated, script written to RUNNER_TEMP), or
        None when its `if:` says skip; an error message when an expression failed."""
        paths = _runtime_paths(temp, step.index)
        await asyncio.to_thread(_create_empty, paths.values())
        prepared = runtime.prepare(
            step,
            files={name: str(path) for name, path in paths.items()},
            temp=str(temp),
            base_path=os.environ.get("PATH", "/usr/bin:/bin"),
        )
        if not prepared.run:
            return None, None, None
        if prepared.error is not None:
            return step, None, prepared.error
        program = prepared.argv[0] if prepared.argv else ""
        if not shutil.which(program, path=prepared.env.get("PATH") or os.defpath):
            # The user's choice of shell, not an infrastructure failure: the step fails.
            return step, None, f"the shell {program!r} is not installed on this runner"
        await asyncio.to_thread((temp / prepared.script_name).write_text, prepared.script)
        run = dataclasses.replace(
            step,
            script=prepared.script,
            env=prepared.env,
            working_directory=prepared.working_directory,
            timeout_seconds=prepared.timeout_seconds,
            continue_on_error=prepared.continue_on_error,
        )
        return run, prepared.argv, None

    async def _run_step(
        self,
        job: JobRun,
        step: StepRun,
        workspace: Path,
        reporter: JobReporter,
        job_deadline: float | None,
        argv: Sequence[str] | None = None,
    ) -> tuple[StepOutcome, int | None, str | None]:
        cwd = workspace
        if step.working_directory:
            cwd = (workspace / step.working_directory).resolve()
            if not cwd.is_dir():
                message = f"working-directory '{step.working_directory}' does not exist\n"
                await reporter.step_output(step.index, message.encode())
                return "failed", None, None
        if argv is None:  # without a runtime: the script inline
            argv = ["bash", "-eo", "pipefail", "-c", step.script]
            if step.shell == "sh":
                argv = ["sh", "-c", step.script]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workspace)}
        env.update({"LANG": "C.UTF-8"})
        env.update(step.env)
        env["CI_WORKSPACE"] = str(workspace)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return "error", None, f"could not start {argv[0]}: {exc}"
        assert proc.stdout is not None
        pump = asyncio.create_task(self._pump(proc.stdout, step.index, reporter))
        waiter = asyncio.create_task(proc.wait())
        canceller = asyncio.create_task(job.cancel.wait())
        timeouts = [t for t in (step.timeout_seconds,) if t]
        if job_deadline is not None:
            timeouts.append(max(0.0, job_deadline - time.monotonic()))
        timeout = min(timeouts) if timeouts else None
        try:
            done, _ = await asyncio.wait(
                {waiter, canceller}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter in done:
                status: StepOutcome = "success" if proc.returncode == 0 else "failed"
                code = _exit_code(proc.returncode)
                # Orphans the step left in its group would hold the pipe open (and keep running).
                _kill_group(proc.pid, signal.SIGKILL)
                await pump
                return status, code, None
            status = "cancelled" if canceller in done else "timed_out"
            await self._terminate(proc)
            if status == "timed_out":
                limit = timeout or 0
                await reporter.step_output(
                    step.index, f"\nstep timed out after {limit:g}s; killed\n".encode()
                )
            await pump
            return status, _exit_code(proc.returncode), None
        finally:
            canceller.cancel()
            if not waiter.done():
                _kill_group(proc.pid, signal.SIGKILL)
                waiter.cancel()
            if not pump.done():
                pump.cancel()

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        _kill_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), self.kill_grace_seconds)
        # Whatever survived SIGTERM (including grandchildren that ignore it) dies now.
        _kill_group(proc.pid, signal.SIGKILL)
        await proc.wait()

    async def _pump(self, stream: asyncio.StreamReader, index: int, reporter: JobReporter) -> None:
        while data := await stream.read(_READ_SIZE):
            await reporter.step_output(index, data)
