"""One job's run in its pod: wait for the pod to start, then drive each step through exec.

`JobFollower` holds everything about one job while it runs (the Job name, the pod, which steps
ran and how they ended), so each method reads like the step it performs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from app.runners.base import (
    JobReporter,
    JobResult,
    JobRun,
    StepOutcome,
    StepRun,
    job_outcome,
    should_run_step,
)
from app.runners.kubernetes import shell
from app.runners.kubernetes.api import ExecResult, Json, Kube, KubeError
from app.runners.kubernetes.manifests import KubernetesSettings, image_for
from app.runners.kubernetes.names import CONTAINER, LABEL_JOB_ID, service_label
from app.runners.kubernetes.process import (
    PROC_SHIFT,
    ForeignJob,
    InfraError,
    Proc,
    TimedOut,
)
from app.runners.kubernetes.steps import RuntimeSteps

log = logging.getLogger(__name__)
__all__ = ["ForeignJob", "InfraError", "JobFollower", "TimedOut"]

# Waiting reasons after which the container will never start by itself.
_FATAL_WAITING = {
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}
_PULL_WAITING = {"ErrImagePull", "ImagePullBackOff"}
_TRANSIENT = (KubeError, aiohttp.ClientError, OSError, TimeoutError)


@dataclass
class JobFollower:
    kube: Kube
    settings: KubernetesSettings
    job: JobRun
    reporter: JobReporter
    name: str  # the Kubernetes Job name
    pod: str | None = None
    finished: dict[int, StepOutcome] = field(default_factory=dict)
    current: int | None = None
    # Steps as they really ran (the workflow runtime may evaluate continue-on-error/timeouts).
    effective: dict[int, StepRun] = field(default_factory=dict)
    # After a restart: what the pod ran (by process key) and the stored output offset.
    known: dict[str, tuple[str, int]] = field(default_factory=dict)
    stored: int = 0

    # ------------------------------------------------------------ start-up

    async def wait_for_pod(self) -> None:
        """Until the job container runs; raises InfraError/TimedOut with Kubernetes' reason."""
        s = self.settings
        started = time.monotonic()
        pull_since: float | None = None
        unschedulable_since: float | None = None
        while True:
            if self.job.cancel.is_set():
                return
            now = time.monotonic()
            pods = [
                p
                for p in await self.kube.list_pods(f"{LABEL_JOB_ID}={self.name}")
                if not (p.get("metadata") or {}).get("deletionTimestamp")
            ]
            if not pods:
                await self._check_job_without_pod()
            else:
                pod = pods[0]
                self.pod = str(pod["metadata"]["name"])
                service = ""
                state = _container_state(pod)
                if "running" in state:
                    state, service = self._unready_service(pod)
                    if not state:
                        return
                waiting = state.get("waiting") or {}
                reason = str(waiting.get("reason") or "")
                if reason in _FATAL_WAITING:
                    raise InfraError(_reason(reason, waiting.get("message")))
                if reason in _PULL_WAITING:
                    pull_since = pull_since if pull_since is not None else now
                    if now - pull_since >= s.image_pull_timeout_seconds:
                        raise InfraError(
                            _reason(
                                reason,
                                f"cannot pull image {service or image_for(self.job, s)!r}: "
                                f"{waiting.get('message') or ''}",
                            )
                        )
                await self._check_pod_not_started(pod, state)
                unschedulable = _unschedulable(pod)
                if unschedulable is None:
                    unschedulable_since = None
                else:
                    unschedulable_since = unschedulable_since or now
                    if now - unschedulable_since >= s.unschedulable_timeout_seconds:
                        raise InfraError(
                            f"Unschedulable for {s.unschedulable_timeout_seconds:g}s: "
                            f"{unschedulable}"
                        )
            if now - started >= s.start_timeout_seconds:
                raise InfraError(f"the pod did not start within {s.start_timeout_seconds:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.job.cancel.wait(), s.poll_interval_seconds)

    def _unready_service(self, pod: Json) -> tuple[Json, str]:
        """The state of the first service container not ready yet ({} when all are): steps
        start only once every service answers on its port (the readiness probe)."""
        for service in self.job.services:
            name = service_label(service.name)
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                if cs.get("name") == name and not cs.get("ready"):
                    return dict(cs.get("state") or {"waiting": {}}), service.image
            if not any(
                cs.get("name") == name
                for cs in (pod.get("status") or {}).get("containerStatuses") or []
            ):
                return {"waiting": {}}, service.image
        return {}, ""

    async def _check_job_without_pod(self) -> None:
        job = await self.kube.read_job(self.name)
        if job is None:
            raise InfraError("the Kubernetes Job was deleted outside the executor")
        deadline = _deadline_exceeded(job)
        if deadline is not None:
            raise TimedOut(deadline)
        # Admission (PodSecurity, quota, webhooks) refused the pod: the Job controller says so in
        # an Event on the Job, and it will not get better by waiting.
        for event in await self.kube.events_for(self.name):
            if event.get("reason") == "FailedCreate":
                raise InfraError(f"FailedCreate: {event.get('message') or ''}".rstrip(": "))

    async def _check_pod_not_started(self, pod: Json, state: Json) -> None:
        status = pod.get("status") or {}
        terminated = state.get("terminated")
        if status.get("phase") == "Failed" or terminated:
            if status.get("reason") == "DeadlineExceeded":
                raise TimedOut(str(status.get("message") or "DeadlineExceeded"))
            detail = terminated or {}
            raise InfraError(
                _reason(
                    str(detail.get("reason") or status.get("reason") or "Failed"),
                    detail.get("message") or status.get("message"),
                )
            )

    # ------------------------------------------------------------ steps

    async def run_steps(self, resume: bool) -> JobResult:
        failed = False
        self.known = await self._pod_state() if resume else {}
        self.stored = await self.reporter.stored_offset() if resume else 0
        runtime = self.job.runtime
        session = RuntimeSteps(self, runtime) if runtime is not None else None
        if session is not None:
            await session.start()
        for step in self.job.steps:
            if self.job.cancel.is_set():
                return await self.cancelled()
            if session is not None:
                outcome = await session.run(step)
            elif str(step.index) in self.known:
                outcome = await self._reattach(step)
            elif not should_run_step(step, failed=failed, cancelled=False):
                self.finished[step.index] = "skipped"
                await self.reporter.step_finished(step.index, "skipped", None)
                continue
            else:
                outcome = await self._run_step(step)
            if outcome == "cancelled":
                return await self.cancelled()
            if outcome in ("failed", "timed_out") and not step.continue_on_error:
                failed = True
        await self._exec(shell.finish_program())
        return self.outcome()

    async def _pod_state(self) -> dict[str, tuple[str, int]]:
        """The processes the pod knows, by key (`<index>` or `<index>-<n>`): rc and log size."""
        _, data = await self.run_collect(shell.state_program())
        known: dict[str, tuple[str, int]] = {}
        for line in data.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0].replace("-", "").isdigit() and parts[2].isdigit():
                known[parts[0]] = (parts[1], int(parts[2]))
        return known

    def resume_offset(self, proc: Proc) -> int:
        """Where to follow a process the pod already knows from: what is stored of it."""
        size = self.known[proc.key][1]
        if self.stored >> PROC_SHIFT == proc.base >> PROC_SHIFT:
            return self.stored & ((1 << PROC_SHIFT) - 1)
        return size if self.stored > proc.base else 0

    async def _reattach(self, step: StepRun) -> StepOutcome:
        await self.reporter.step_started(step.index)
        self.current = step.index
        proc = Proc.of(step.index, 0, self._start_program(step))
        offset = self.resume_offset(proc)
        status, code, error = await self.drive(
            step, proc, shell.follow_program(proc.key, offset), offset
        )
        return await self.end_step(step, status, code, error)

    @staticmethod
    def _start_program(step: StepRun) -> bytes:
        try:
            return shell.start_program(
                step.index, step.script, step.env, step.working_directory, shell=step.shell
            )
        except ValueError as exc:
            raise InfraError(f"step {step.index + 1} ({step.name}): {exc}") from exc

    async def _run_step(self, step: StepRun) -> StepOutcome:
        program = self._start_program(step)
        await self.reporter.step_started(step.index)
        self.current = step.index
        proc = Proc.of(step.index, 0, program)
        status, code, error = await self.drive(step, proc, program, 0)
        return await self.end_step(step, status, code, error)

    async def drive(
        self, step: StepRun, proc: Proc, program: bytes, offset: int
    ) -> tuple[StepOutcome, int | None, str | None]:
        """Run/follow one process until it ends; a broken stream is followed on from its offset.
        Its status, exit code and error; nothing is reported but its output."""
        position = offset

        async def output(data: bytes) -> None:
            nonlocal position
            position += len(data)
            await self.reporter.step_output(step.index, data, proc.base + position)

        deadline = (
            time.monotonic() + step.timeout_seconds if step.timeout_seconds is not None else None
        )
        while True:
            task = asyncio.create_task(self._exec(program, output))
            try:
                outcome = await self._wait_step(proc.key, task, deadline)
            finally:
                # Never leave an exec reporting output behind us (e.g. when the executor is
                # shutting down and cancels this job's task).
                if not task.done():
                    task.cancel()
            if outcome is not None:
                error = None
                if outcome == "timed_out":
                    error = f"step timed out after {step.timeout_seconds:g}s"
                return outcome, None, error
            try:
                result = task.result()
            except _TRANSIENT as exc:
                log.info("exec stream of step %s broke: %s", proc.key, exc)
                result = ExecResult(None)
            following = not program.startswith(b"__ci_main")
            if (
                following
                and result.exit_code == shell.NOT_STARTED
                and proc.key not in await self._pod_state()
            ):
                # The start program never arrived: send it again.
                program = proc.start
                continue
            if not following and result.exit_code == shell.ALREADY_STARTED:
                # An earlier copy of the start program runs the step: follow that one. (A step
                # that itself exits 253 is followed too, and its code read back from the pod.)
                program = shell.follow_program(proc.key, position)
                continue
            if result.exit_code is not None:
                if result.exit_code != 0:
                    await self._check_stopped_from_outside(result.exit_code)
                    if self.job.cancel.is_set():
                        return "cancelled", None, None
                status: StepOutcome = "success" if result.exit_code == 0 else "failed"
                return status, result.exit_code, None
            if result.error is not None:
                raise InfraError(f"exec in pod {self.pod}: {result.error}")
            await self._pod_still_running()
            await asyncio.sleep(self.settings.retry_interval_seconds)
            program = shell.follow_program(proc.key, position)

    async def _wait_step(
        self, key: str, task: asyncio.Task[ExecResult], deadline: float | None
    ) -> StepOutcome | None:
        """None when the exec ended by itself; else cancelled / timed_out (step stopped)."""
        cancel = asyncio.create_task(self.job.cancel.wait())
        try:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            await asyncio.wait({task, cancel}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            cancel.cancel()
        if task.done():
            return None
        if self.job.cancel.is_set():
            task.cancel()
            return "cancelled"
        # The step's own timeout: TERM to its process group, KILL after the grace period.
        with contextlib.suppress(*_TRANSIENT):
            await self._exec(shell.signal_program(key, "TERM"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), self.settings.termination_grace_seconds)
        if not task.done():
            with contextlib.suppress(*_TRANSIENT):
                await self._exec(shell.signal_program(key, "KILL"))
            with contextlib.suppress(TimeoutError, *_TRANSIENT):
                await asyncio.wait_for(task, 5)
        task.cancel()
        return "timed_out"

    async def end_step(
        self, step: StepRun, status: StepOutcome, code: int | None, error: str | None = None
    ) -> StepOutcome:
        self.finished[step.index] = status
        self.current = None
        await self.reporter.step_finished(step.index, status, code, error)
        return status

    async def _check_stopped_from_outside(self, exit_code: int) -> None:
        """A step that failed because its pod was stopped (deadline, eviction, drain, OOM) did
        not fail by itself: say what stopped it. Killed by a signal (137/143), the pod's state
        may lag the step's end by up to the grace period: look again until it settles."""
        signalled = exit_code in (137, 143)
        settle = time.monotonic() + (
            self.settings.termination_grace_seconds + 2 if signalled else 0
        )
        while True:
            await self._raise_if_stopped()
            if time.monotonic() >= settle or self.job.cancel.is_set():
                return
            await asyncio.sleep(self.settings.poll_interval_seconds)

    async def _raise_if_stopped(self) -> None:
        job = await self.kube.read_job(self.name)
        deadline = _deadline_exceeded(job) if job is not None else None
        if deadline is not None:
            raise TimedOut(deadline)
        pods = await self.kube.list_pods(f"{LABEL_JOB_ID}={self.name}")
        pod = next((p for p in pods if p["metadata"]["name"] == self.pod), None)
        if pod is None or self.job.cancel.is_set():
            return
        status = pod.get("status") or {}
        terminated = _container_state(pod).get("terminated") or {}
        if status.get("reason") or terminated.get("reason") == "OOMKilled":
            raise InfraError(
                _reason(
                    str(status.get("reason") or terminated.get("reason")),
                    status.get("message") or terminated.get("message"),
                )
            )
        if (pod.get("metadata") or {}).get("deletionTimestamp") and job is not None:
            raise InfraError("the pod was stopped (deleted or its node drained)")
        if terminated:
            raise InfraError(
                _reason(
                    f"the job container ended ({terminated.get('reason') or 'Error'}, exit code "
                    f"{terminated.get('exitCode')})",
                    terminated.get("message"),
                )
            )

    async def _pod_still_running(self) -> None:
        pods = await self.kube.list_pods(f"{LABEL_JOB_ID}={self.name}")
        pod = next((p for p in pods if p["metadata"]["name"] == self.pod), None)
        if pod is None:
            if self.job.cancel.is_set():
                return
            job = await self.kube.read_job(self.name)
            if job is not None and _deadline_exceeded(job):
                raise TimedOut(str(_deadline_exceeded(job)))
            raise InfraError("the pod was deleted outside the executor")
        state = _container_state(pod)
        if "running" not in state:
            await self._check_pod_not_started(pod, state)
            raise InfraError("the job container is not running")

    async def run_collect(self, program: bytes, payload: bytes = b"") -> tuple[int | None, bytes]:
        """Run a short program in the pod (`payload` follows it on stdin): its exit code and
        its whole output."""
        data = bytearray()

        async def collect(chunk: bytes) -> None:
            data.extend(chunk)

        result = await self._exec(program, collect, payload)
        return result.exit_code, bytes(data)

    async def _exec(
        self, program: bytes, on_output: Any = None, payload: bytes = b""
    ) -> ExecResult:
        async def discard(_data: bytes) -> None:
            return None

        assert self.pod is not None
        return await self.kube.exec(
            self.pod, CONTAINER, shell.exec_argv(program), program + payload, on_output or discard
        )

    # ------------------------------------------------------------ endings

    def outcome(self) -> JobResult:
        steps = [self.effective.get(step.index, step) for step in self.job.steps]
        return job_outcome(steps, self.finished)

    async def end_unfinished(self, running: StepOutcome, error: str | None) -> None:
        """Report every step not finished yet: the running one as `running`, with the reason;
        the rest `skipped` without repeating it (the reason belongs to the job)."""
        for step in self.job.steps:
            if step.index in self.finished:
                continue
            status: StepOutcome = running if step.index == self.current else "skipped"
            self.finished[step.index] = status
            await self.reporter.step_finished(
                step.index, status, None, error if status == running else None
            )

    async def cancelled(self) -> JobResult:
        # Deleting the Job deletes the pod: the kubelet TERMs PID 1, which forwards it to the
        # running step's process group; SIGKILL follows after terminationGracePeriodSeconds.
        with contextlib.suppress(*_TRANSIENT):
            await self.kube.delete_job(self.name)
        await self.end_unfinished("cancelled", None)
        return JobResult("cancelled")


def _container_state(pod: Json) -> Json:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            return dict(cs.get("state") or {})
    return {}


def _unschedulable(pod: Json) -> str | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return str(cond.get("message") or "Unschedulable")
    return None


def _deadline_exceeded(job: Json) -> str | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if (
            cond.get("type") in ("Failed", "FailureTarget")
            and cond.get("status") == "True"
            and cond.get("reason") == "DeadlineExceeded"
        ):
            return str(cond.get("message") or "Job was active longer than specified deadline")
    return None


def _reason(reason: str, message: Any) -> str:
    text = str(message or "").strip()
    return f"{reason}: {text}" if text else reason
