"""From a stored build and its parsed workflow to what the runner executes.

Used twice: at creation (to store the jobs, edges and steps) and at run time (to build the
runner's JobRun), so the stored steps and the executed steps can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.models import Build
from app.runners.base import JobRun, StepRun
from app.workflow import Condition, JobSpec, WorkflowSpec
from app.workflow.parser import CHECKOUT
from app.workflow.spec import Flag, Minutes

# Values reach git only through the environment, never spliced into the script.
CHECKOUT_SCRIPT = """\
set -e
git init -q .
git fetch -q --depth 1 "$CI_REPO_URL" "$CI_CHECKOUT_REF"
git checkout -q FETCH_HEAD
echo "checked out $(git rev-parse HEAD)"
"""
_DEFAULT_JOB_TIMEOUT_MINUTES = 360  # GitHub's default; a forgotten `sleep infinity` still ends.


@dataclass(frozen=True)
class PlannedStep:
    index: int
    name: str
    script: str
    shell: str
    env: dict[str, str]
    condition: Condition
    continue_on_error: bool
    timeout_minutes: float | None
    working_directory: str | None


def _flag(value: Flag) -> bool:
    # Expressions are evaluated by the runtime (app/workflow/runtime.py); here only literals.
    return value if isinstance(value, bool) else value.strip().lower() == "true"


def _minutes(value: Minutes) -> float | None:
    return value if isinstance(value, float | int) else None


def has_checkout(job: JobSpec) -> bool:
    return any(step.uses is not None and CHECKOUT.fullmatch(step.uses) for step in job.steps)


def planned_steps(job: JobSpec, *, checkout: bool) -> list[PlannedStep]:
    """The job's steps as run: an implicit checkout first when the build has a repository and
    the job does not check out itself (GitHub never adds one; we do for `repo_url` builds)."""
    steps: list[PlannedStep] = []
    if checkout and not has_checkout(job):
        steps.append(
            PlannedStep(
                0, "checkout", CHECKOUT_SCRIPT, "sh", {}, Condition.default(), False, None, None
            )
        )
    for spec in job.steps:
        script, shell = spec.run, spec.shell or job.defaults.shell or "bash"
        if spec.uses is not None:
            script, shell = CHECKOUT_SCRIPT, "sh"
        steps.append(
            PlannedStep(
                index=len(steps),
                name=spec.name,
                script=script,
                shell=shell,
                env=dict(spec.env),
                condition=spec.condition,
                continue_on_error=_flag(spec.continue_on_error),
                timeout_minutes=_minutes(spec.timeout_minutes),
                working_directory=spec.working_directory or job.defaults.working_directory,
            )
        )
    return steps


def predefined_env(build: Build, job: JobSpec) -> dict[str, str]:
    assert build.id is not None
    env = {
        "CI": "true",
        "CI_BUILD_ID": str(build.id),
        "CI_BUILD_NUMBER": str(build.number),
        "CI_PIPELINE_ID": build.pipeline_id,
        "CI_COMMIT_SHA": build.commit_sha or "",
        "CI_BRANCH": build.branch or "",
        "CI_JOB_NAME": job.name,
    }
    if build.repo_url:
        env["CI_REPO_URL"] = build.repo_url
        env["CI_CHECKOUT_REF"] = build.commit_sha or build.branch or "HEAD"
    return env


def job_run(build: Build, spec: WorkflowSpec, job: JobSpec, secret_names: frozenset[str]) -> JobRun:
    """Environment precedence, lowest first: predefined, workflow, job, step, build variables."""
    assert build.id is not None
    base = {**predefined_env(build, job), **spec.env, **job.env}
    steps = tuple(
        StepRun(
            index=p.index,
            name=p.name,
            script=p.script,
            shell="sh" if p.shell == "sh" else "bash",
            env={**base, **p.env, **build.variables},
            condition=p.condition,
            continue_on_error=p.continue_on_error,
            timeout_seconds=p.timeout_minutes * 60 if p.timeout_minutes else None,
            working_directory=p.working_directory,
        )
        for p in planned_steps(job, checkout=bool(build.repo_url))
    )
    minutes = _minutes(job.timeout_minutes) or _DEFAULT_JOB_TIMEOUT_MINUTES
    return JobRun(
        build_id=build.id,
        job_name=job.name,
        image=job.image,
        timeout_seconds=minutes * 60,
        steps=steps,
        secret_names=secret_names,
        runs_on=job.runs_on,
        services=job.services,
        kubernetes=job.kubernetes,
    )
