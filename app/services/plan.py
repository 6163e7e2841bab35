"""From a stored build and its parsed workflow to what the runner executes.

Used twice: at creation (to store the jobs, edges and steps) and at run time (to build the
runner's JobRun, with its contexts and `JobRuntime`), so the stored steps and the executed steps
can never disagree.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from app.actions.errors import ActionError
from app.actions.fetch import FetchedAction
from app.actions.support import ActionSupport, fetch_pinned
from app.logs.masking import secret_names
from app.models import Build
from app.runners.base import JobRun, ServiceContainer, StepRun
from app.workflow import Condition, JobSpec, WorkflowSpec
from app.workflow import expressions as ex
from app.workflow.hashfiles import hash_files
from app.workflow.parser import CHECKOUT, STEP_NAME_LIMIT
from app.workflow.runtime import JobRuntime, input_name
from app.workflow.spec import Flag, Minutes

# Values reach git only through the environment, never spliced into the script. Inputs of a
# written `uses: actions/checkout` step arrive as INPUT_* variables (see docs/workflow-syntax.md).
CHECKOUT_SCRIPT = """\
set -e
url="$CI_REPO_URL"
ref="${INPUT_REF:-$CI_CHECKOUT_REF}"
if [ -n "${INPUT_REPOSITORY:-}" ]; then
  case "$INPUT_REPOSITORY" in
    *://*|/*) url="$INPUT_REPOSITORY" ;;
    *) url="$GITHUB_SERVER_URL/$INPUT_REPOSITORY" ;;
  esac
  ref="${INPUT_REF:-HEAD}"
fi
if [ -z "$url" ]; then
  echo "::warning::checkout: no repo_url and no repository input; nothing to check out"
  exit 0
fi
dir="${INPUT_PATH:-.}"
mkdir -p "$dir" && cd "$dir"
git init -q .
if [ -n "${INPUT_TOKEN:-}" ]; then
  auth=$(printf 'x-access-token:%s' "$INPUT_TOKEN" | base64 | tr -d '\\n')
  git config http.extraheader "AUTHORIZATION: basic $auth"
fi
depth="${INPUT_FETCH_DEPTH:-1}"
if [ "$depth" = "0" ]; then
  git fetch -q "$url" "$ref"
else
  git fetch -q --depth "$depth" "$url" "$ref"
fi
git checkout -q FETCH_HEAD
case "${INPUT_SUBMODULES:-false}" in
  recursive) git submodule update -q --init --recursive ;;
  true) git submodule update -q --init ;;
esac
echo "checked out $(git rev-parse HEAD)"
"""
_DEFAULT_JOB_TIMEOUT_MINUTES = 360  # GitHub's default; a forgotten `sleep infinity` still ends.
RUNNER_OS, RUNNER_ARCH = "Linux", "X64"


@dataclass(frozen=True)
class BuildActions:
    """A build's actions for its jobs: the pins stored with its snapshot, the pinned trees the
    executor loaded, and what fetches and runs them (None where actions are not available)."""

    pins: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fetched: Mapping[str, FetchedAction] = field(default_factory=dict)
    support: ActionSupport | None = None

    async def fetch(self, uses: str) -> FetchedAction:
        """An action a step meets at run time (pinned ones at their commit)."""
        if self.support is None:
            raise ActionError(f"{uses}: actions from git are not available here")
        commit = self.pins.get(uses, {}).get("commit")
        return await fetch_pinned(self.support.fetcher, uses, str(commit) if commit else None)


class JobSetupError(Exception):
    """A job-level expression (env, timeout-minutes, ...) failed: the job fails with this."""


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
    post_of: int | None = None  # a "Post <step>" row: the index of that step


def _flag(value: Flag) -> bool:
    # Expressions are evaluated by the runtime when the step starts; here only literals.
    return value if isinstance(value, bool) else value.strip().lower() == "true"


def _minutes(value: Minutes) -> float | None:
    return value if isinstance(value, float | int) else None


def has_checkout(job: JobSpec) -> bool:
    return any(step.uses is not None and CHECKOUT.fullmatch(step.uses) for step in job.steps)


def post_uses(pins: Mapping[str, Mapping[str, Any]] | None) -> frozenset[str]:
    """The pinned actions that have a `post` phase (app/actions/support.py)."""
    return frozenset(uses for uses, pin in (pins or {}).items() if pin.get("post"))


def planned_steps(
    job: JobSpec, *, checkout: bool, posts: frozenset[str] = frozenset()
) -> list[PlannedStep]:
    """The job's steps as run: an implicit checkout first when the build has a repository and
    the job does not check out itself (GitHub never adds one; we do for `repo_url` builds).
    `posts`: remote actions with a `post` phase; each step using one gets a "Post <name>" row
    at the job's end, the last step's first, as GitHub shows them."""
    steps: list[PlannedStep] = []
    if checkout and not has_checkout(job):
        steps.append(
            PlannedStep(
                0, "checkout", CHECKOUT_SCRIPT, "sh", {}, Condition.default(), False, None, None
            )
        )
    for spec in job.steps:
        script, shell = spec.run, spec.shell or job.defaults.shell or "bash"  # defaults merged
        env = dict(spec.env)
        if spec.uses is not None and CHECKOUT.fullmatch(spec.uses):
            script, shell = CHECKOUT_SCRIPT, "sh"
            env.update({input_name(k): v for k, v in spec.with_.items()})
        elif spec.uses is not None:
            script = ""  # an action: the runtime turns it into processes (app/workflow/session.py)
        steps.append(
            PlannedStep(
                index=len(steps),
                name=spec.name,
                script=script,
                shell=shell,
                env=env,
                condition=spec.condition,
                continue_on_error=_flag(spec.continue_on_error),
                timeout_minutes=_minutes(spec.timeout_minutes),
                working_directory=spec.working_directory or job.defaults.working_directory,
            )
        )
    count = len(job.steps)
    for main, spec in reversed(list(zip(steps[len(steps) - count :], job.steps, strict=True))):
        if spec.uses is not None and spec.uses in posts:
            steps.append(
                PlannedStep(
                    index=len(steps),
                    name=f"Post {main.name}"[:STEP_NAME_LIMIT],
                    script="",
                    shell="bash",
                    env={},
                    condition=Condition("always()"),  # the action's post-if decides
                    continue_on_error=False,
                    timeout_minutes=main.timeout_minutes,
                    working_directory=None,
                    post_of=main.index,
                )
            )
    return steps


def build_secrets(build: Build) -> dict[str, str]:
    """The secret-named variables of a build, for the `secrets` context (the encrypted `secrets`
    map of POST /builds is added by the executor, which decrypts it: app/secrets.py)."""
    return {name: build.variables[name] for name in secret_names(build.variables)}


def _repository(build: Build) -> tuple[str, str]:
    """(server_url, owner/name) from the repo URL, as GitHub's contexts name them."""
    if build.repo_url:
        parsed = urlparse(build.repo_url)
        path = parsed.path.strip("/").removesuffix(".git")
        server = f"{parsed.scheme}://{parsed.netloc}" if parsed.netloc else ""
        if path.count("/") >= 1:
            return server, "/".join(path.split("/")[-2:])
        return server, path or build.pipeline_id
    return "", build.pipeline_id


def job_contexts(
    build: Build,
    spec: WorkflowSpec,
    job: JobSpec,
    needs: dict[str, dict[str, Any]],
    secrets: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The contexts a job's expressions see (`env` and `steps` are added as the job runs).
    `secrets` is the build's decrypted `secrets` map (app/secrets.py)."""
    assert build.id is not None
    server, repository = _repository(build)
    event = dict(build.event or {})
    branch = build.branch or ""
    siblings = [j for j in spec.jobs if j.key == job.key]
    github = {
        "event_name": build.event_name or "push",
        "event": event,
        "sha": build.commit_sha or "",
        "ref": f"refs/heads/{branch}" if branch else "",
        "ref_name": branch,
        "ref_type": "branch" if branch else "",
        "head_ref": ((event.get("pull_request") or {}).get("head") or {}).get("ref", ""),
        "base_ref": ((event.get("pull_request") or {}).get("base") or {}).get("ref", ""),
        "repository": repository,
        "repository_owner": repository.split("/")[0] if "/" in repository else "",
        "server_url": server,
        "run_id": str(build.id),
        "run_number": str(build.number),
        "run_attempt": "1",
        "actor": build.triggered_by,
        "triggering_actor": build.triggered_by,
        "workflow": spec.name or "workflow",
        "job": job.key,
        "action": "",
        "token": "",
        "retention_days": "90",
    }
    return {
        "github": github,
        "vars": {},
        "secrets": {"GITHUB_TOKEN": "", **build_secrets(build), **(secrets or {})},
        "inputs": _inputs(spec, event),
        "matrix": {k: _typed(v) for k, v in (job.matrix or {}).items()},
        "strategy": {
            "fail-fast": job.fail_fast,
            "job-index": siblings.index(job) if job in siblings else 0,
            "job-total": len(siblings),
            "max-parallel": job.max_parallel or len(siblings),
        },
        "needs": dict(needs),  # keyed by job id (app/services/executor.py _needs_context)
        "job": {"status": "success", "container": {}, "services": {}},
        "runner": {
            "os": RUNNER_OS,
            "arch": RUNNER_ARCH,
            "name": "ci-executor",
            "environment": "self-hosted",
        },
    }


def _typed(value: Any) -> Any:
    """Matrix scalars are kept as text for names; expressions see booleans and numbers again
    (`matrix.experimental && ...` must be false for `false`). A quoted "true" becomes a boolean
    too: the one difference from GitHub, which keeps YAML's types."""
    if value in ("true", "false"):
        return value == "true"
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() and "." not in value else number
    return value


def _inputs(spec: WorkflowSpec, event: dict[str, Any]) -> dict[str, Any]:
    """Declared inputs' defaults, then the event's inputs (booleans typed as GitHub types them)."""
    given = event.get("inputs")
    inputs: dict[str, Any] = {name: default for name, (default, _) in spec.inputs.items()}
    if isinstance(given, dict):
        for name, value in given.items():
            kind = spec.inputs.get(name, (None, "string"))[1]
            if kind == "boolean" and isinstance(value, str):
                value = value.lower() == "true"
            inputs[name] = value
    return inputs


def predefined_env(
    build: Build, job: JobSpec, github: dict[str, Any] | None = None
) -> dict[str, str]:
    """Our CI_* variables and GitHub's default ones (the runner adds the path-valued ones:
    GITHUB_WORKSPACE, RUNNER_TEMP, GITHUB_OUTPUT, ...)."""
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
    if github is not None:
        env.update(
            {
                "GITHUB_ACTIONS": "true",
                "GITHUB_SHA": github["sha"],
                "GITHUB_REF": github["ref"],
                "GITHUB_REF_NAME": github["ref_name"],
                "GITHUB_REF_TYPE": github["ref_type"],
                "GITHUB_HEAD_REF": github["head_ref"],
                "GITHUB_BASE_REF": github["base_ref"],
                "GITHUB_REPOSITORY": github["repository"],
                "GITHUB_REPOSITORY_OWNER": github["repository_owner"],
                "GITHUB_SERVER_URL": github["server_url"],
                "GITHUB_RUN_ID": github["run_id"],
                "GITHUB_RUN_NUMBER": github["run_number"],
                "GITHUB_RUN_ATTEMPT": github["run_attempt"],
                "GITHUB_JOB": github["job"],
                "GITHUB_ACTOR": github["actor"],
                "GITHUB_TRIGGERING_ACTOR": github["triggering_actor"],
                "GITHUB_WORKFLOW": github["workflow"],
                "GITHUB_EVENT_NAME": github["event_name"],
                "RUNNER_OS": RUNNER_OS,
                "RUNNER_ARCH": RUNNER_ARCH,
                "RUNNER_NAME": "ci-executor",
                "RUNNER_ENVIRONMENT": "self-hosted",
            }
        )
    return env


def _job_env(spec: WorkflowSpec, job: JobSpec, contexts: dict[str, Any]) -> dict[str, str]:
    """Workflow then job `env:`, evaluated in order (a job value may read `env.X` of the
    workflow's)."""
    env: dict[str, str] = {}
    for layer in (spec.env, job.env):
        for name, value in layer.items():
            env[name] = ex.interpolate(value, {**contexts, "env": dict(env)})
    return env


def _services(job: JobSpec, contexts: dict[str, Any]) -> tuple[ServiceContainer, ...]:
    """`services:` with their images evaluated; a service whose image is empty is not started
    (GitHub's runner skips an empty image, so `image: ${{ cond && 'x' || '' }}` is optional)."""
    result = []
    for service in job.services:
        image = ex.interpolate(service.image, contexts).strip()
        if image:
            result.append(dataclasses.replace(service, image=image))
    return tuple(result)


def job_run(
    build: Build,
    spec: WorkflowSpec,
    job: JobSpec,
    secret_names: frozenset[str],
    needs: dict[str, dict[str, Any]] | None = None,
    secrets: Mapping[str, str] | None = None,
    actions: BuildActions | None = None,
) -> JobRun:
    """Environment precedence, lowest first: predefined, workflow, job, step, build variables.

    Raises JobSetupError when a job-level expression cannot be evaluated."""
    assert build.id is not None
    contexts = job_contexts(build, spec, job, needs or {}, secrets)
    try:
        job_env = _job_env(spec, job, contexts)
        contexts["env"] = job_env
        minutes = _minutes(job.timeout_minutes)
        if isinstance(job.timeout_minutes, str):
            minutes = float(ex.evaluate_template(job.timeout_minutes, contexts))
        runs_on = tuple(ex.interpolate(label, contexts) for label in job.runs_on)
        tolerated = job.continue_on_error
        if isinstance(tolerated, str):
            tolerated = ex.truthy(ex.evaluate_template(tolerated, contexts))
        services = _services(job, contexts)
    except (ex.ExpressionError, ValueError, TypeError) as exc:
        raise JobSetupError(f"Error evaluating the job's expressions: {exc}") from exc
    base = {**predefined_env(build, job, contexts["github"]), **job_env}
    actions = actions or BuildActions()
    planned = planned_steps(job, checkout=bool(build.repo_url), posts=post_uses(actions.pins))
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
            shell_template=p.shell,
        )
        for p in planned
    )
    offset = int(bool(build.repo_url) and not has_checkout(job))  # an implicit checkout first
    support = actions.support
    runtime = JobRuntime(
        contexts=contexts,
        env={**base},
        overrides=dict(build.variables),
        steps={s.index + offset: s for s in job.steps},
        default_shell=job.defaults.shell or "bash",
        outputs=job.outputs,
        event=json.dumps(contexts["github"]["event"]),
        env_templates=(spec.env, job.env),
        hash_files=hash_files,
        actions=actions.fetched,
        posts={p.index: p.post_of for p in planned if p.post_of is not None},
        fetch=actions.fetch,
        action_env=support.runtime_env(build.id, job.name) if support else None,
        actions_cache=support.fetcher.cache_dir if support else None,
    )
    runtime.continue_on_error = bool(tolerated)
    return JobRun(
        build_id=build.id,
        job_name=job.name,
        image=job.image,
        timeout_seconds=(minutes or _DEFAULT_JOB_TIMEOUT_MINUTES) * 60,
        steps=steps,
        secret_names=secret_names,
        runs_on=runs_on,
        services=services,
        kubernetes=job.kubernetes,
        runtime=runtime,
    )
