"""Workflow YAML text → validated, matrix-expanded `WorkflowSpec`.

`parse_workflow` never stops at the first mistake: it validates everything it can and raises one
`WorkflowError` listing every problem, each with the 1-based line and column of the offending key or
value. The work is split along its seams: app/workflow/loader.py (YAML and positions),
checks.py (keys and value shapes), platform.py (runs-on, services, container, ...), strategy.py
(the matrix), graph.py (needs: order and cycles); this module walks the workflow, its jobs and
steps, and expands matrix jobs.

Every key of GitHub's workflow syntax is accepted (docs/workflow-syntax.md says what each means
here); a key GitHub does not know is an error with a "did you mean" when one is close, because a
silently ignored key (a typo in `timeout-minutes`, say) is worse than a rejected one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from app.actions.errors import ActionError
from app.actions.fetch import parse_uses
from app.workflow import graph, platform
from app.workflow.checks import JOB_KEYS, STEP_KEYS, WORKFLOW_KEYS, Checker, Text
from app.workflow.conditions import Condition
from app.workflow.loader import (
    Pos,
    Problems,
    describe,
    item_pos,
    key_pos,
    load,
    node_pos,
    plain,
    value_pos,
)
from app.workflow.matrix import Combination, combination_name, substitute
from app.workflow.spec import (
    Concurrency,
    Environment,
    Flag,
    JobSpec,
    Minutes,
    RunDefaults,
    StepSpec,
    WorkflowError,
    WorkflowSpec,
)
from app.workflow.strategy import Strategy, parse_strategy

if TYPE_CHECKING:  # app.runners.base imports app.workflow
    from app.runners.base import KubernetesOptions, ServiceContainer

JOB_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
STEP_ID = JOB_ID
STEP_NAME_LIMIT = 100
# DESIGN §4 (GitHub's own matrix limit is 256): checked before anything heavy runs.
MAX_JOBS = 256
MAX_STEPS = 1000
CHECKOUT = re.compile(r"actions/checkout@\S+", re.IGNORECASE)
SUPPORTED_ACTIONS = (
    "supported: actions/checkout@<ref> (built in), local actions `./path`, and composite or "
    "JavaScript actions `owner/repo[/path]@ref` from ACTIONS_URL"
)


@lru_cache(maxsize=64)
def parse_workflow(text: str) -> WorkflowSpec:
    """Validate and expand a workflow; raise WorkflowError with every problem found.

    Cached by text: a build's YAML is parsed when it is created and again when it runs (and on
    every retry), and a 100-step workflow costs ruamel tens of milliseconds. Specs are frozen and
    never mutated by callers; errors are not cached."""
    problems = Problems()
    root = load(text, problems)
    if root is not None:
        spec = _Parser(problems, text).workflow(root)
        if not problems.items:
            return spec
    raise WorkflowError(sorted(problems.items, key=lambda p: (p.line, p.column)))


# --- intermediate form -------------------------------------------------------------------------


@dataclass
class _Step:
    run: Text | None
    uses: Text | None = None
    id: str | None = None
    name: Text | None = None
    env: dict[str, Text] = field(default_factory=dict)
    with_: dict[str, Text] = field(default_factory=dict)
    condition: Condition = field(default_factory=Condition.default)
    continue_on_error: bool | Text = False
    timeout_minutes: float | Text | None = None
    working_directory: Text | None = None
    shell: str | None = None


@dataclass
class _Job(Strategy):
    pos: Pos = (0, 0)
    name: Text | None = None
    image: Text | None = None
    env: dict[str, Text] = field(default_factory=dict)
    timeout_minutes: float | Text | None = None
    condition: Condition = field(default_factory=Condition.default)
    needs: list[tuple[str, Pos]] = field(default_factory=list)
    steps: list[_Step] = field(default_factory=list)
    runs_on: list[str] = field(default_factory=list)
    environment: Environment | None = None
    outputs: dict[str, Text] = field(default_factory=dict)
    continue_on_error: bool | Text = False
    defaults: RunDefaults = field(default_factory=RunDefaults)
    concurrency: Concurrency | None = None
    services: tuple[ServiceContainer, ...] = ()
    kubernetes: KubernetesOptions | None = None

    def texts(self) -> Iterable[Text]:
        """Every string `${{ matrix.x }}` is substituted in."""
        for text in (self.name, self.image, *self.env.values(), *self.outputs.values()):
            if text is not None:
                yield text
        for step in self.steps:
            for text in (
                step.name,
                step.run,
                step.working_directory,
                *step.env.values(),
                *step.with_.values(),
            ):
                if text is not None:
                    yield text


# --- validation --------------------------------------------------------------------------------


class _Parser(Checker):
    defaults = RunDefaults()  # the workflow's `defaults.run`, under each job's own

    def workflow(self, root: CommentedMap) -> WorkflowSpec:
        where = "the workflow"
        self.unknown_keys(root, WORKFLOW_KEYS, where)
        name = self.optional_str(root, "name", where)
        run_name = self.optional_str(root, "run-name", where)
        env = {k: t.value for k, t in self.env(root, where).items()}
        defaults = self.defaults = platform.defaults(self, root, where)
        concurrency = platform.concurrency(self, root, where)
        jobs = self.jobs(root)
        return WorkflowSpec(
            name=name.value if name else None,
            env=env,
            jobs=jobs,
            run_name=run_name.value if run_name else None,
            defaults=defaults,
            concurrency=concurrency,
            inputs=_declared_inputs(root.get("on")),
        )

    def jobs(self, root: CommentedMap) -> tuple[JobSpec, ...]:
        if "jobs" not in root:
            self.add(node_pos(root), "the workflow has no `jobs` key")
            return ()
        jobs_map = root["jobs"]
        if not isinstance(jobs_map, CommentedMap) or not jobs_map:
            self.add(
                value_pos(root, "jobs"),
                f"`jobs` must be a non-empty mapping of job ids to jobs, not {describe(jobs_map)}",
            )
            return ()
        if len(jobs_map) > MAX_JOBS:
            # Before looking at any job: a hostile workflow must not cost more than counting.
            self.add(
                value_pos(root, "jobs"),
                f"the workflow has {len(jobs_map)} jobs; the limit is {MAX_JOBS}",
            )
            return ()
        jobs: list[_Job] = []
        for key, body in jobs_map.items():
            pos = key_pos(jobs_map, key)
            if not isinstance(key, str) or not JOB_ID.fullmatch(key):
                self.add(
                    pos,
                    f"job id {describe(key)} is not valid: it must start with a letter or '_' "
                    "and contain only letters, digits, '_' and '-'",
                )
                if not isinstance(key, str):
                    continue
            job = _Job(key=str(key), pos=pos)
            jobs.append(job)
            if not isinstance(body, CommentedMap):
                self.add(
                    value_pos(jobs_map, key),
                    f"job {job.key!r} must be a mapping with `steps`, not {describe(body)}",
                )
                continue
            self.job(job, body)
        order = self.graph(jobs)
        for job in jobs:
            self.check_references(job)
        if self.problems.items:
            return ()
        total = sum(1 if j.combinations is None else len(j.combinations) for j in jobs)
        if total > MAX_JOBS:
            self.add(
                value_pos(root, "jobs"),
                f"the workflow expands to {total} jobs (matrix combinations counted); "
                f"the limit is {MAX_JOBS}",
            )
            return ()
        return _expand(jobs, order)

    def job(self, job: _Job, body: CommentedMap) -> None:
        where = f"job {job.key!r}"
        self.unknown_keys(body, JOB_KEYS, where)
        if "uses" in body:
            self.add(
                key_pos(body, "uses"),
                f"{where}: reusable workflows (`uses:` on a job) are not supported yet; "
                "copy the called workflow's jobs into this one",
            )
            return
        job.name = self.optional_str(body, "name", where)
        job.image = self.optional_str(body, "image", where)
        job.env = self.env(body, where)
        container_shell: str | None = None
        if "container" in body:
            image, container_env = platform.container_image(self, body, where)
            if job.image is not None and image is not None:
                self.add(key_pos(body, "container"), f"{where} has both `image` and `container`")
            job.image = job.image or image
            job.env = {**container_env, **job.env}
            container_shell = "sh"  # GitHub's default shell inside a container
        job.timeout_minutes = self.timeout(body, where)
        job.condition = self.condition(body, where)
        job.needs = self.needs(body, where)
        job.runs_on = platform.runs_on(self, body, where)
        job.environment = platform.environment(self, body, where)
        job.concurrency = platform.concurrency(self, body, where)
        own = platform.defaults(self, body, where)
        job.defaults = RunDefaults(
            shell=own.shell or self.defaults.shell or container_shell,
            working_directory=own.working_directory or self.defaults.working_directory,
        )
        job.outputs = self.string_map(body, "outputs", where, "output")
        job.continue_on_error = self.bool_or_expression(body, "continue-on-error", where, False)
        job.services = platform.services(self, body, where)
        job.kubernetes = platform.kubernetes(self, body, where)
        if "strategy" in body:
            parse_strategy(self, job, body)
        self.steps(job, body)

    def needs(self, body: CommentedMap, where: str) -> list[tuple[str, Pos]]:
        if "needs" not in body:
            return []
        value = body["needs"]
        message = f"`needs` of {where} must be a job id or a list of job ids"
        if isinstance(value, str):
            return [(str(value), value_pos(body, "needs"))]
        if not isinstance(value, CommentedSeq):
            self.add(value_pos(body, "needs"), f"{message}, not {describe(value)}")
            return []
        needs: list[tuple[str, Pos]] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.add(item_pos(value, i), f"{message}, not {describe(item)} in the list")
            elif item not in (name for name, _ in needs):  # repeating a need changes nothing
                needs.append((str(item), item_pos(value, i)))
        return needs

    def steps(self, job: _Job, body: CommentedMap) -> None:
        where = f"job {job.key!r}"
        if "steps" not in body:
            self.add(job.pos, f"{where} has no `steps`")
            return
        steps = body["steps"]
        if not isinstance(steps, CommentedSeq) or not steps:
            self.add(
                value_pos(body, "steps"),
                f"`steps` of {where} must be a non-empty list of steps, not {describe(steps)}",
            )
            return
        if len(steps) > MAX_STEPS:
            self.add(
                value_pos(body, "steps"),
                f"{where} has {len(steps)} steps; the limit is {MAX_STEPS}",
            )
            return
        ids: set[str] = set()
        for i, step_body in enumerate(steps):
            step_where = f"step {i + 1} of {where}"
            if not isinstance(step_body, CommentedMap):
                self.add(
                    item_pos(steps, i),
                    f"{step_where} must be a mapping with `run`, not {describe(step_body)}",
                )
                continue
            step = self.step(step_body, step_where, item_pos(steps, i))
            if step is None:
                continue
            if step.id is not None:
                if step.id in ids:
                    self.add(
                        value_pos(step_body, "id"),
                        f"{step_where}: the id {step.id!r} is used by an earlier step",
                    )
                ids.add(step.id)
            job.steps.append(step)

    def step(self, body: CommentedMap, where: str, pos: Pos) -> _Step | None:
        self.unknown_keys(body, STEP_KEYS, where)
        step = _Step(run=None)
        step.id = self.step_id(body, where)
        step.name = self.optional_str(body, "name", where)
        step.env = self.env(body, where)
        step.with_ = self.string_map(body, "with", where, "input")
        step.condition = self.condition(body, where)
        step.continue_on_error = self.bool_or_expression(body, "continue-on-error", where, False)
        step.timeout_minutes = self.timeout(body, where)
        step.working_directory = self.optional_str(body, "working-directory", where)
        step.shell = platform.shell(self, body, where)
        if "run" in body and "uses" in body:
            self.add(key_pos(body, "uses"), f"{where} has both `run` and `uses`; use one")
            return None
        if "uses" in body:
            step.uses = self.uses(body, where)
            return step if step.uses is not None else None
        if "run" not in body:
            self.add(pos, f"{where} has neither `run` nor `uses`")
            return None
        value = body["run"]
        if isinstance(value, str) and not value.strip():
            step.run = Text("", value_pos(body, "run"), f"`run` of {where}")  # GitHub runs it
        else:
            step.run = self.optional_str(body, "run", where)
        return step if step.run is not None else None

    def step_id(self, body: CommentedMap, where: str) -> str | None:
        text = self.optional_str(body, "id", where)
        if text is None:
            return None
        if not STEP_ID.fullmatch(text.value):
            self.add(
                text.pos,
                f"`id` of {where} must start with a letter or '_' and contain only letters, "
                f"digits, '_' and '-', not {text.value!r}",
            )
            return None
        return text.value

    def uses(self, body: CommentedMap, where: str) -> Text | None:
        """`actions/checkout@ref` (built in), `./path` (a local action, read when the step runs)
        and `owner/repo[/path]@ref` (fetched from ACTIONS_URL when the build is created)."""
        text = self.optional_str(body, "uses", where)
        if text is None:
            return None
        value = text.value.strip()
        if CHECKOUT.fullmatch(value) or value.startswith("./"):
            return text
        if value.startswith("docker://"):
            problem = "Docker actions (`docker://`) are not supported yet"
        else:
            try:
                parse_uses(value)
                return text
            except ActionError as exc:
                problem = str(exc)
        self.add(text.pos, f"{where} uses {value!r}: {problem} ({SUPPORTED_ACTIONS})")
        return None

    def graph(self, jobs: list[_Job]) -> list[str]:
        """Job keys in topological order (lowest YAML position first among ready jobs)."""
        keys = [job.key for job in jobs]
        known = set(keys)
        needs: dict[str, list[str]] = {}
        for job in jobs:
            needs[job.key] = []
            for name, pos in job.needs:
                if name == job.key:
                    self.add(pos, f"job {job.key!r} needs itself")
                elif name not in known:
                    self.add(pos, f"job {job.key!r} needs {name!r}, which does not exist")
                else:
                    needs[job.key].append(name)
        result = graph.topological_order(keys, needs)
        by_key = {job.key: job for job in jobs}
        for loop in result.cycles:
            pos = next(pos for name, pos in by_key[loop[0]].needs if name == loop[1])
            self.add(pos, "cycle in needs: " + " -> ".join(loop))
        return result.order

    def check_references(self, job: _Job) -> None:
        """Expression syntax of the job's fields. A `matrix.<key>` the matrix does not define (or
        in a job without a matrix) is not an error: GitHub evaluates it to null (''), and real
        workflows rely on that (a key only some `include` rows set, e.g. tokio's CI)."""
        for text in job.texts():
            self.expressions(text)
        for step in job.steps:
            for flag in (step.continue_on_error, step.timeout_minutes):
                if isinstance(flag, Text):
                    self.expressions(flag)
        for flag in (job.continue_on_error, job.timeout_minutes):
            if isinstance(flag, Text):
                self.expressions(flag)


def _declared_inputs(on: object) -> dict[str, tuple[object, str]]:
    """Inputs declared under `on.workflow_dispatch` / `on.workflow_call`, with their defaults
    (the `inputs` context holds them when the event does not), typed as GitHub types them."""
    result: dict[str, tuple[object, str]] = {}
    if not isinstance(on, CommentedMap):
        return result
    for event in ("workflow_call", "workflow_dispatch"):
        block = on.get(event)
        inputs = block.get("inputs") if isinstance(block, CommentedMap) else None
        if not isinstance(inputs, CommentedMap):
            continue
        for name, spec in inputs.items():
            if isinstance(name, str) and isinstance(spec, CommentedMap):
                kind = str(spec.get("type") or "string")
                default = plain(spec.get("default"))
                if kind == "boolean":
                    default = default is True or str(default).lower() == "true"
                result.setdefault(name, (default, kind))
    return result


# --- expansion ---------------------------------------------------------------------------------


def _expand(jobs: list[_Job], order: list[str]) -> tuple[JobSpec, ...]:
    by_key = {job.key: job for job in jobs}
    names = {
        job.key: [job.key]
        if job.combinations is None
        else [combination_name(job.key, c) for c in job.combinations]
        for job in jobs
    }
    specs: list[JobSpec] = []
    for key in order:
        job = by_key[key]
        needs = tuple(name for need, _ in job.needs for name in names[need])
        if job.combinations is None:
            specs.append(_job_spec(job, key, None, len(specs), needs))
        else:
            for name, combination in zip(names[key], job.combinations, strict=True):
                specs.append(_job_spec(job, name, combination, len(specs), needs))
    return tuple(specs)


def _job_spec(
    job: _Job, name: str, combination: Combination | None, index: int, needs: tuple[str, ...]
) -> JobSpec:
    # A matrix computed at run time: its `${{ matrix.x }}` stay for the runtime to evaluate.
    values = None if job.matrix_template is not None else (combination or {})

    def sub(text: Text | None) -> str | None:
        return None if text is None else _sub(text.value, values)

    def subs(texts: dict[str, Text]) -> dict[str, str]:
        return {k: _sub(v.value, values) for k, v in texts.items()}

    steps = tuple(_step_spec(i, step, values) for i, step in enumerate(job.steps))
    return JobSpec(
        name=name,
        key=job.key,
        display_name=sub(job.name) or name,
        index=index,
        needs=needs,
        steps=steps,
        condition=job.condition,
        image=sub(job.image),
        env=subs(job.env),
        timeout_minutes=_minutes(job.timeout_minutes, values),
        matrix=dict(combination) if combination is not None else None,
        fail_fast=job.fail_fast,
        max_parallel=job.max_parallel,
        runs_on=tuple(_sub(label, values) for label in job.runs_on),
        environment=job.environment,
        outputs=subs(job.outputs),
        continue_on_error=_flag(job.continue_on_error, values),
        defaults=job.defaults,
        concurrency=job.concurrency,
        services=job.services,
        kubernetes=job.kubernetes,
        matrix_template=job.matrix_template,
    )


def _step_spec(index: int, step: _Step, values: Combination | None) -> StepSpec:
    run = _sub(step.run.value, values) if step.run else ""
    uses = step.uses.value.strip() if step.uses else None
    name = _sub(step.name.value, values) if step.name else None
    return StepSpec(
        index=index,
        name=name or (f"Run {uses}" if uses else _default_step_name(run)),
        run=run,
        env={k: _sub(v.value, values) for k, v in step.env.items()},
        condition=step.condition,
        continue_on_error=_flag(step.continue_on_error, values),
        timeout_minutes=_minutes(step.timeout_minutes, values),
        working_directory=(
            _sub(step.working_directory.value, values) if step.working_directory else None
        ),
        shell=step.shell,
        id=step.id,
        uses=uses,
        with_={k: _sub(v.value, values) for k, v in step.with_.items()},
    )


def _sub(text: str, values: Combination | None) -> str:
    return text if values is None else substitute(text, values)


def _flag(value: bool | Text, values: Combination | None) -> Flag:
    return _sub(value.value, values) if isinstance(value, Text) else value


def _minutes(value: float | Text | None, values: Combination | None) -> Minutes:
    return _sub(value.value, values) if isinstance(value, Text) else value


def _default_step_name(run: str) -> str:
    """GitHub's name for a `run:` step without `name:`: `Run <first line of the script>`."""
    first = next((line.strip() for line in run.splitlines() if line.strip()), "")
    return f"Run {first}"[:STEP_NAME_LIMIT]
