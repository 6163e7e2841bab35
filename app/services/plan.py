"""From a stored build and its parsed workflow to what the runner executes.

Used twice: at creation (to store the jobs, edges and steps) and at run time (to build the
runner's JobRun), so the stored steps and the executed steps can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.models import Build
from app.runners.base import JobRun, StepRun
from app.workflow import Condition, JobSpec, WorkflowSpec

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


def planned_steps(job: JobSpec, *, checkout: bool) -> list[PlannedStep]:
    steps: list[PlannedStep] = []
    if checkout:
        steps.append(
            PlannedStep(
                0, "checkout", CHECKOUT_SCRIPT, "sh", {}, Condition.default(), False, None, None
            )
        )
    for spec in job.steps:
        steps.append(
            PlannedStep(
                index=len(steps),
                name=spec.name,
                script=spec.run,
                shell=spec.shell,
                env=dict(spec.env),
                condition=spec.condition,
                continue_on_error=spec.continue_on_error,
                timeout_minutes=spec.timeout_minutes,
                working_directory=spec.working_directory,
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
    minutes = job.timeout_minutes or _DEFAULT_JOB_TIMEOUT_MINUTES
    return JobRun(
        build_id=build.id,
        job_name=job.name,
        image=job.image,
        timeout_seconds=minutes * 60,
        steps=steps,
        secret_names=secret_names,
    )
