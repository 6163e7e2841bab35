"""The validated, expanded form of a workflow: what the rest of the service consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.workflow.conditions import Condition

if TYPE_CHECKING:  # app.runners.base imports app.workflow: only the types are needed here
    from app.runners.base import KubernetesOptions, ServiceContainer

# A `shell:` value: bash, sh, python, pwsh, powershell, or a custom template containing `{0}`.
Shell = str
# A value GitHub lets be an expression: the literal, or the `${{ }}` text evaluated at run time.
Flag = bool | str
Minutes = float | str | None


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow; line and column are 1-based (0 when unknown)."""

    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


class WorkflowError(ValueError):
    """Raised by parse_workflow with every problem found (never just the first)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class RunDefaults:
    """`defaults.run`: what a `run:` step uses when it names no shell or working directory."""

    shell: Shell | None = None
    working_directory: str | None = None


@dataclass(frozen=True)
class Environment:
    name: str
    url: str | None = None


@dataclass(frozen=True)
class Concurrency:
    group: str
    cancel_in_progress: Flag = False


@dataclass(frozen=True)
class StepSpec:
    index: int  # 0-based position in the job (after a checkout step is prepended, if any)
    name: str  # `name:` or the first line of `run` (or `uses`), matrix-substituted
    run: str  # matrix-substituted script text ("" for a `uses:` step)
    env: dict[str, str] = field(default_factory=dict)  # the step's own `env:` only
    condition: Condition = field(default_factory=lambda: Condition.default())
    continue_on_error: Flag = False
    timeout_minutes: Minutes = None
    working_directory: str | None = None
    shell: Shell | None = None  # None: the job's, then the workflow's `defaults.run`, then bash
    id: str | None = None
    uses: str | None = None  # `actions/checkout@v4`, `./path/to/action`
    with_: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobSpec:
    name: str  # unique expanded job name, e.g. "build" or "test (3.11, a)"; = build_jobs.name
    key: str  # the YAML job id, e.g. "test"
    display_name: str  # `name:` (matrix-substituted) or the expanded name
    index: int  # position in a topological order of the DAG
    needs: tuple[str, ...]  # expanded names of the jobs this one needs directly
    steps: tuple[StepSpec, ...]
    condition: Condition = field(default_factory=lambda: Condition.default())
    image: str | None = None  # `image:` or `container:` (its image)
    env: dict[str, str] = field(default_factory=dict)  # the job's own `env:` only
    timeout_minutes: Minutes = None
    matrix: dict[str, Any] | None = None  # this combination's values, None for plain jobs
    fail_fast: bool = True  # matrix only: a failure cancels still-running siblings
    max_parallel: int | None = None  # matrix only: at most this many siblings run at once
    runs_on: tuple[str, ...] = ()
    environment: Environment | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # name -> template
    continue_on_error: Flag = False
    defaults: RunDefaults = field(default_factory=RunDefaults)
    concurrency: Concurrency | None = None
    services: tuple[ServiceContainer, ...] = ()
    kubernetes: KubernetesOptions | None = None
    # A matrix computed by an expression: this spec is a placeholder (named by the job id) that
    # the executor replaces with one job per combination once the needs have finished.
    matrix_template: Any = None


@dataclass(frozen=True)
class WorkflowSpec:
    name: str | None
    env: dict[str, str]
    jobs: tuple[JobSpec, ...]  # in topological order (JobSpec.index == position)
    run_name: str | None = None
    # `on.workflow_dispatch.inputs` / `on.workflow_call.inputs`: name -> (default, type)
    inputs: dict[str, tuple[Any, str]] = field(default_factory=dict)
    defaults: RunDefaults = field(default_factory=RunDefaults)
    concurrency: Concurrency | None = None

    def job(self, name: str) -> JobSpec:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)

    @property
    def edges(self) -> list[tuple[str, str]]:
        """(from_job, to_job) pairs: from_job must finish before to_job."""
        return [(need, job.name) for job in self.jobs for need in job.needs]
