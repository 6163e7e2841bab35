"""The step invocation protocol (app/workflow/session.py) in a pod.

With a workflow runtime every step is a session: the runtime asks for processes one at a time
(`Invocation`: a `run:` script, a composite action's step, a JavaScript action's pre/main/post),
log lines, files the step can see (`ReadFile`: a local action's action.yml) and actions met at
run time (`FetchAction`). Each process runs in the pod like any step (its own key in $CI_RUN_DIR,
see process.py), its runtime files are read back by exec and handed to the runtime.

- Action trees (the executor's actions cache, `Invocation.readable`) are copied into the pod once
  per job: a gzipped tar on the exec's stdin, unpacked by the image's `tar` under `/ci/actions`,
  where `runtime.step_path` says the step sees them.
- JavaScript actions run with the image's `node`; without one the step fails with the runtime's
  message ("... needs `node`, which is not installed in this job's image ...").
- The toolkit's ACTIONS_* variables come with the invocation's environment: the executor's URL
  (ACTIONS_PUBLIC_URL) must be reachable from build pods.
- After an executor restart the job's sessions are replayed from the start: a process the pod
  already ran is followed from the stored offset instead of started, and its runtime files are read
  again, so the runtime's state (outputs, env, path, state, composite results) is rebuilt.
"""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.runners.base import StepOutcome, StepRun
from app.runners.kubernetes import shell, workflow
from app.runners.kubernetes.hashfiles import PREPARE_POOL, PodHashFiles
from app.runners.kubernetes.process import InfraError, Proc
from app.workflow.invocation import Invocation, Log, Ran
from app.workflow.runtime import MAX_FILE_BYTES, JobRuntime
from app.workflow.session import StepSession

if TYPE_CHECKING:
    from app.runners.kubernetes.follower import JobFollower

ACTIONS = "/ci/actions"  # where the steps see the actions cache


def _tar_gz(root: Path) -> bytes:
    """The tree as a gzipped tar (its `.git` left out; symbolic links stored as links, never
    followed)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for directory, subdirectories, names in os.walk(root):
            subdirectories[:] = sorted(d for d in subdirectories if d != ".git")
            base = Path(directory)
            for name in sorted([*subdirectories, *names]):
                path = base / name
                tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return buffer.getvalue()


class RuntimeSteps:
    """Drives every step of one job through the runtime's sessions (see the module docstring)."""

    def __init__(self, follower: JobFollower, runtime: JobRuntime) -> None:
        self.f = follower
        self.rt = runtime
        self.copied: set[str] = set()
        self.loop = asyncio.get_running_loop()

    async def start(self) -> None:
        """The job's directories are known: write the runtime's files (event.json) into the pod;
        `hashFiles()` hashes the pod's workspace."""
        files = self.rt.start(
            workspace=workflow.WORKSPACE,
            temp=workflow.TEMP,
            tool_cache=workflow.TOOL_CACHE,
            actions_dir=ACTIONS,
        )
        written = {f"{workflow.TEMP}/{name}": text for name, text in files.items()}
        await self.f.run_collect(shell.write_files_program(written))
        self.rt.hash_files = PodHashFiles(self.f.run_collect, self.loop)

    async def _send(self, session: StepSession, reply: Any) -> Any:
        # On a worker thread: the runtime's hashFiles() execs in the pod through this loop.
        return await self.loop.run_in_executor(PREPARE_POOL, session.send, reply)

    def _replaying(self, proc: Proc) -> bool:
        """Output of this process (or later) is stored already: what came before it too."""
        return self.f.stored > proc.base

    async def run(self, step: StepRun) -> StepOutcome:
        f = self.f
        session = self.rt.session(step, base_path=shell.BASE_PATH)
        request = await self._send(session, None)
        if request is None:
            f.finished[step.index] = "skipped"
            await f.reporter.step_finished(step.index, "skipped", None)
            return "skipped"
        await f.reporter.step_started(step.index)
        f.current = step.index
        n = 0
        while request is not None:
            reply: Any = None
            if isinstance(request, Invocation):
                reply = await self._invoke(step, request, n)
                n += 1
            elif isinstance(request, Log):
                if not self._replaying(Proc.of(step.index, n, b"")):
                    await f.reporter.step_output(step.index, request.text.encode())
            else:
                reply = await session.load(request, self._read_text)
            request = await self._send(session, reply)
        end = session.end
        f.effective[step.index] = replace(step, continue_on_error=end.continue_on_error)
        status: StepOutcome = end.status  # type: ignore[assignment]
        message = end.message if status == "error" else None
        return await f.end_step(step, status, end.exit_code, message)

    async def _invoke(self, step: StepRun, request: Invocation, n: int) -> Ran:
        f = self.f
        for tree in request.readable:
            problem = await self._copy_tree(Path(tree))
            if problem is not None:
                return Ran("failed", None, message=problem)
        script_path = f"{workflow.TEMP}/{request.script_name}" if request.script_name else None
        key = Proc.of(step.index, n, b"").key
        try:
            start = shell.start_program(
                key,
                request.script,
                request.env,
                request.working_directory,
                argv=request.argv,
                script_path=script_path,
                empty_files=list(request.files.values()),
                missing=request.missing,
            )
        except ValueError as exc:
            raise InfraError(f"step {step.index + 1} ({step.name}): {exc}") from exc
        proc = Proc.of(step.index, n, start)
        if request.label and not self._replaying(proc):
            await f.reporter.step_output(step.index, f"{request.label}\n".encode())
        program, offset = start, 0
        if proc.key in f.known:
            offset = f.resume_offset(proc)
            program = shell.follow_program(proc.key, offset)
        run = replace(step, timeout_seconds=request.timeout_seconds)
        status, code, error = await f.drive(run, proc, program, offset)
        if status == "error":
            return Ran("error", code, message=error)
        if error is not None:  # timed out: said in the log, like the local runner
            await f.reporter.step_output(step.index, f"{error}\n".encode())
        if status == "cancelled":
            return Ran(status, code)
        return Ran(status, code, await self._read_files(request.files))

    async def _read_files(self, files: dict[str, str]) -> Any:
        names = list(files)
        program = shell.files_program([files[n] for n in names], MAX_FILE_BYTES)
        _, data = await self.f.run_collect(program)
        return workflow.runtime_files_named(
            dict(zip(names, workflow.parse_files(data, len(names)), strict=True))
        )

    async def _read_text(self, path: str) -> str | None:
        code, data = await self.f.run_collect(shell.read_file_program(path, MAX_FILE_BYTES))
        return data.decode("utf-8", "replace") if code == 0 else None

    async def _copy_tree(self, tree: Path) -> str | None:
        """Copy an action's tree into the pod once per job; a problem of the image, or None."""
        destination = self.rt.step_path(tree)
        if destination in self.copied:
            return None
        data = await asyncio.to_thread(_tar_gz, tree)
        code, output = await self.f.run_collect(
            shell.copy_tree_program(destination, len(data)), payload=data
        )
        if code == 127:
            return "copying the action into the pod needs `tar` in the job's image"
        if code != 0:
            text = output.decode("utf-8", "replace").strip()[-500:]
            raise InfraError(f"could not copy the action into the pod ({code}): {text}")
        self.copied.add(destination)
        return None
