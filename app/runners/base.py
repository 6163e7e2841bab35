"""The runner interface: how the scheduler hands one DAG job to an execution backend.

A runner executes every step of one job in order and reports what happens through a JobReporter.
The step loop's rules are the same for every runner and are written once, at the end of this
module: a step runs when its `if:` condition holds given whether an earlier step failed
(`should_run_step`); a `failed` or `timed_out` step without `continue-on-error` fails the job
(`step_failure`), the first such step deciding the job's outcome (`job_outcome`). A cancel, the
job's own timeout and an infrastructure `error` end the job at once, as each runner notices them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from app.workflow.conditions import Condition
from app.workflow.runtime import JobRuntime

StepOutcome = Literal["success", "failed", "skipped", "cancelled", "timed_out", "error"]
JobOutcome = Literal["success", "failed", "cancelled", "timed_out", "error"]


@dataclass(frozen=True)
class StepRun:
    index: int
    name: str
    script: str  # the `run:` text, matrix-substituted; never contains variable values
    shell: Literal["bash", "sh"]
    env: dict[str, str]  # the step's final environment (predefined < workflow < job < step < vars)
    condition: Condition
    continue_on_error: bool
    timeout_seconds: float | None
    working_directory: str | None  # relative to the job workspace
    # The step's `shell:` as written or defaulted (bash, sh, python, pwsh, or "cmd {0}"); `shell`
    # above is the nearest of bash/sh for runners that only know those two.
    shell_template: str | None = None


@dataclass(frozen=True)
class ServiceContainer:
    """One `services:` entry of a job: a sidecar reachable from the steps by `name`.

    Only the kubernetes runner runs them (containers of the job's pod); the local runner refuses a
    job that has any, with a clear message."""

    name: str  # the key under `services:`, a DNS-label-safe id
    image: str
    env: dict[str, str] = field(default_factory=dict)
    ports: tuple[int, ...] = ()  # container-side ports ("8080:80" → 80)
    options: str | None = None  # docker-style options; only what maps to Kubernetes is honoured


@dataclass(frozen=True)
class KubernetesOptions:
    """The `kubernetes:` job key (our extension): pod settings users know from GitLab/Woodpecker."""

    resources: dict[str, dict[str, str]] = field(default_factory=dict)  # requests / limits
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    service_account_name: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    runtime_class_name: str | None = None
    priority_class_name: str | None = None


@dataclass(frozen=True, eq=False)  # identity semantics: runners keep live jobs in sets
class JobRun:
    build_id: int
    job_name: str  # unique expanded name, e.g. "test (3.11)"
    image: str | None
    timeout_seconds: float | None
    steps: tuple[StepRun, ...]
    secret_names: frozenset[str] = frozenset()  # env names whose values are masked secrets
    runs_on: tuple[str, ...] = ()  # the job's `runs-on` labels (the kubernetes runner maps them)
    services: tuple[ServiceContainer, ...] = ()
    kubernetes: KubernetesOptions | None = None
    # GitHub semantics evaluated as the job runs (app/workflow/runtime.py): contexts, expressions
    # in step `if`/`run`/`env`/..., $GITHUB_OUTPUT/ENV/PATH/STEP_SUMMARY. None: plain steps.
    runtime: JobRuntime | None = field(default=None, compare=False)
    # Set by the scheduler to stop the job (build cancel, fail-fast). The runner kills what runs,
    # reports the running step `cancelled`, the rest `skipped`/`cancelled`, and returns "cancelled".
    cancel: asyncio.Event = field(default_factory=asyncio.Event, compare=False)


@dataclass(frozen=True)
class JobResult:
    status: JobOutcome
    error: str | None = None  # infrastructure reason for `error` / `timed_out`


class JobReporter(Protocol):
    """What a runner tells the service. Calls for one job are made from one task, in order.

    Re-reporting a transition that already happened (a runner re-attaching after a restart) is
    harmless: the state machine ignores it.
    """

    async def step_started(self, index: int) -> None: ...

    async def step_output(self, index: int, data: bytes, source_offset: int | None = None) -> None:
        """Raw output of a step. `source_offset`, when given, is the runner's own byte offset
        (e.g. into the pod log) just after `data`; it is stored with the chunks so a runner that
        re-attaches can skip what was already stored (`JobReporter.stored_offset`)."""
        ...

    async def step_finished(
        self, index: int, status: StepOutcome, exit_code: int | None, error: str | None = None
    ) -> None: ...

    async def stored_offset(self) -> int:
        """The largest `source_offset` whose data is durably stored for this job (0 if none)."""
        ...


class Runner(Protocol):
    name: str
    # True when run_job(resume=True) can follow work started by another (dead) executor.
    can_reattach: bool

    async def start(self) -> None:
        """Check the backend is usable (config present, permissions); raise a clear error if not."""
        ...

    async def stop(self) -> None: ...

    async def run_job(
        self, job: JobRun, reporter: JobReporter, *, resume: bool = False
    ) -> JobResult:
        """Run (or, with resume=True, re-attach to) one job until it ends. Must not raise for
        problems of the user's commands; infrastructure failures return status "error"."""
        ...

    async def cancel_build(self, build_id: int) -> None:
        """Stop everything of this build this runner knows about (best effort, idempotent)."""
        ...

    async def cleanup_build(self, build_id: int) -> None:
        """Release what the build held once it finished (e.g. its Kubernetes Secret)."""
        ...

    async def sweep_orphans(
        self, finished_build_ids: Callable[[list[int]], Awaitable[set[int]]]
    ) -> list[str]:
        """At startup: delete what builds that already finished left behind (e.g. Kubernetes
        Jobs after a crash). `finished_build_ids` answers which of the given builds finished.
        Returns the names of what was deleted."""
        ...


def step_failure(step: StepRun, status: StepOutcome) -> JobResult | None:
    """What a finished step makes of its job, when it fails it: a `failed` or `timed_out` step
    without `continue-on-error` fails the job (`timed_out` naming the step). None otherwise."""
    if step.continue_on_error or status not in ("failed", "timed_out"):
        return None
    if status == "timed_out":
        return JobResult("timed_out", f"step {step.index + 1} ({step.name}) timed out")
    return JobResult("failed")


def job_outcome(steps: Sequence[StepRun], finished: Mapping[int, StepOutcome]) -> JobResult:
    """The job-outcome rule shared by all runners, for a job that ran to its end (not
    cancelled, not stopped by its own timeout or an infrastructure error): the first step that
    failed it decides (see `step_failure`); otherwise the job succeeded."""
    for step in steps:
        status = finished.get(step.index)
        failure = None if status is None else step_failure(step, status)
        if failure is not None:
            return failure
    return JobResult("success")


def should_run_step(step: StepRun, *, failed: bool, cancelled: bool) -> bool:
    """The step `if:` rule shared by all runners: success() means no earlier step failed."""
    return step.condition.evaluate(
        success=not failed and not cancelled, failure=failed, cancelled=cancelled
    )
