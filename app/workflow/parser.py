"""Workflow YAML text → validated, matrix-expanded `WorkflowSpec`.

`parse_workflow` never stops at the first mistake: it validates everything it can and raises one
`WorkflowError` listing every problem, each with the 1-based line and column of the offending key or
value (ruamel.yaml's round-trip loader keeps positions on every mapping and sequence).

Accepted on purpose: a top-level `on:` key is ignored, so a workflow pasted from GitHub does not
fail on its trigger block. Every other unknown key is an error, because a silently ignored key (a
typo in `timeout-minutes`, say) is worse than a rejected one.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.scalarbool import ScalarBoolean

from app.workflow import graph
from app.workflow.conditions import Condition, parse_condition
from app.workflow.matrix import (
    MAX_COMBINATIONS,
    Combination,
    combination_name,
    expand_matrix,
    key_order,
    product_size,
    references,
    substitute,
)
from app.workflow.spec import JobSpec, Problem, Shell, StepSpec, WorkflowError, WorkflowSpec

Pos = tuple[int, int]  # 1-based (line, column)

JOB_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
MATRIX_KEY = JOB_ID
STEP_NAME_LIMIT = 100
# Beyond this many base combinations we refuse to enumerate them just to count how many `exclude`
# would remove: a matrix that large is a mistake whatever its excludes say.
ENUMERATION_LIMIT = 65_536

WORKFLOW_KEYS = ("name", "env", "jobs", "on")
JOB_KEYS = ("name", "image", "env", "timeout-minutes", "if", "needs", "strategy", "steps")
STEP_KEYS = (
    "name",
    "run",
    "env",
    "timeout-minutes",
    "continue-on-error",
    "working-directory",
    "shell",
    "if",
)
STRATEGY_KEYS = ("matrix", "fail-fast", "max-parallel")
SHELLS: tuple[Shell, ...] = ("bash", "sh")
_HINTS = {"runs-on": " (use `image:` to choose the container image)"}

MAX_BRACKET_DEPTH = 100
_BRACKET = re.compile(r"[\[\]{}]")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"


@lru_cache(maxsize=64)
def parse_workflow(text: str) -> WorkflowSpec:
    """Validate and expand a workflow; raise WorkflowError with every problem found.

    Cached by text: a build's YAML is parsed when it is created and again when it runs (and on
    every retry), and a 100-step workflow costs ruamel tens of milliseconds. Specs are frozen and
    never mutated by callers; errors are not cached."""
    problems = _Problems()
    root = _load(text, problems)
    if root is not None:
        spec = _Parser(problems).workflow(root)
        if not problems.items:
            return spec
    raise WorkflowError(sorted(problems.items, key=lambda p: (p.line, p.column)))


# --- loading -----------------------------------------------------------------------------------


class _Problems:
    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, pos: Pos, message: str) -> None:
        self.items.append(Problem(pos[0], pos[1], message))


def _load(text: str, problems: _Problems) -> CommentedMap | None:
    """The document's top-level mapping, or None after recording why there is none."""
    too_deep = _too_deep(text)
    if too_deep is not None:
        problems.add(too_deep, f"invalid YAML: brackets nest more than {MAX_BRACKET_DEPTH} deep")
        return None
    try:
        root_node = YAML(typ="rt").compose(text)
    except YAMLError as exc:
        problems.add(_mark_pos(exc), f"invalid YAML: {_yaml_message(exc)}")
        return None
    except RecursionError:
        # ruamel's composer recurses once per nesting level
        problems.add((0, 0), "invalid YAML: the document is nested too deeply")
        return None
    if root_node is None or (isinstance(root_node, ScalarNode) and str(root_node.tag) == _NULL_TAG):
        problems.add((1, 1), "the workflow is empty")
        return None
    if not isinstance(root_node, MappingNode):
        pos = (root_node.start_mark.line + 1, root_node.start_mark.column + 1)
        problems.add(pos, "the workflow must be a mapping with a `jobs` key")
        return None
    for key_node in _duplicate_keys(root_node):
        mark = key_node.start_mark
        problems.add((mark.line + 1, mark.column + 1), f"duplicate key {key_node.value!r}")
    # Duplicates are already reported, with every one's position; loading with them allowed (the
    # first value wins) lets the rest of the document be checked too.
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = True
    try:
        data = yaml.load(text)
    except YAMLError as exc:
        problems.add(_mark_pos(exc), f"invalid YAML: {_yaml_message(exc)}")
        return None
    except RecursionError:
        problems.add((0, 0), "invalid YAML: the document is nested too deeply")
        return None
    except (ValueError, KeyError, TypeError) as exc:
        # ruamel raises these without a position for explicit tags it cannot apply (`!!int abc`).
        problems.add((0, 0), f"invalid YAML: cannot construct a value ({exc!r})")
        return None
    if not isinstance(data, CommentedMap):  # pragma: no cover - composed as a mapping above
        problems.add((1, 1), "the workflow must be a mapping with a `jobs` key")
        return None
    return data


def _too_deep(text: str) -> Pos | None:
    """Where brackets first nest deeper than MAX_BRACKET_DEPTH, if they do.

    Deliberately naive (brackets inside strings and scripts count too): real workflows nest a few
    levels, and anything this deep is rejected cheaply before ruamel, whose scanner slows down
    super-linearly with flow nesting (800 levels of `[` take seconds).
    """
    depth = 0
    for match in _BRACKET.finditer(text):
        if match.group() in "[{":
            depth += 1
            if depth > MAX_BRACKET_DEPTH:
                line = text.count("\n", 0, match.start()) + 1
                column = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
                return line, column
        else:
            depth = max(depth - 1, 0)
    return None


def _mark_pos(exc: YAMLError) -> Pos:
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            return mark.line + 1, mark.column + 1
    return 0, 0


def _yaml_message(exc: YAMLError) -> str:
    if isinstance(exc, MarkedYAMLError):
        parts = [part for part in (exc.context, exc.problem) if part]
        if parts:
            return ", ".join(str(part).strip() for part in parts)
    return str(exc).strip()


def _duplicate_keys(root: Node) -> Iterator[ScalarNode]:
    """Second and later occurrences of a scalar key in the same mapping, anywhere in the tree."""
    seen: set[int] = set()  # aliases share nodes, and may even point at an ancestor
    stack: list[Node] = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            keys: set[tuple[str, str]] = set()
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode) and str(key_node.tag) != _MERGE_TAG:
                    ident = (str(key_node.tag), str(key_node.value))
                    if ident in keys:
                        yield key_node
                    keys.add(ident)
                stack.extend((key_node, value_node))
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)


# --- positions and values ----------------------------------------------------------------------


def _node_pos(node: CommentedMap | CommentedSeq) -> Pos:
    return node.lc.line + 1, node.lc.col + 1


def _key_pos(mapping: CommentedMap, key: Any) -> Pos:
    try:
        line, col = mapping.lc.key(key)
    except KeyError:  # keys that came in through a `<<:` merge have no position of their own
        return _node_pos(mapping)
    return line + 1, col + 1


def _value_pos(mapping: CommentedMap, key: Any) -> Pos:
    # An empty value has no token: ruamel would report wherever the next token starts (often the
    # next key), so point at the key instead.
    if mapping.get(key) is None:
        return _key_pos(mapping, key)
    try:
        line, col = mapping.lc.value(key)
    except KeyError:
        return _node_pos(mapping)
    return line + 1, col + 1


def _item_pos(seq: CommentedSeq, index: int) -> Pos:
    try:
        line, col = seq.lc.item(index)
    except KeyError:
        return _node_pos(seq)
    return line + 1, col + 1


def _describe(value: Any) -> str:
    """How a value is named in a message."""
    if value is None:
        return "nothing"
    if isinstance(value, bool | ScalarBoolean):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(str(value))
    if isinstance(value, int | float):
        return _number_text(value)
    if isinstance(value, Mapping):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return f"a {type(value).__name__}"


def _number_text(value: float) -> str:
    # Like JavaScript (and so GitHub): 3.0 becomes "3", 3.10 becomes "3.1".
    if isinstance(value, int):
        return str(int(value))
    number = float(value)
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    return repr(number)


def _scalar_text(value: Any) -> str | None:
    """The string form of a scalar value (env and matrix values), None if it is not a scalar."""
    if value is None:
        return ""
    if isinstance(value, bool | ScalarBoolean):
        return "true" if value else "false"
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int | float):
        return _number_text(value)
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return value.isoformat()
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool | ScalarBoolean)


# --- intermediate form -------------------------------------------------------------------------


@dataclass
class _Text:
    """A string that may hold `${{ matrix.x }}` references, and where it came from."""

    value: str
    pos: Pos
    label: str  # e.g. "`run` of step 1 of job 'test'"


@dataclass
class _Step:
    run: _Text
    name: _Text | None = None
    env: dict[str, _Text] = field(default_factory=dict)
    condition: Condition = field(default_factory=Condition.default)
    continue_on_error: bool = False
    timeout_minutes: float | None = None
    working_directory: _Text | None = None
    shell: Shell = "bash"


@dataclass
class _Job:
    key: str
    pos: Pos
    name: _Text | None = None
    image: _Text | None = None
    env: dict[str, _Text] = field(default_factory=dict)
    timeout_minutes: float | None = None
    condition: Condition = field(default_factory=Condition.default)
    needs: list[tuple[str, Pos]] = field(default_factory=list)
    steps: list[_Step] = field(default_factory=list)
    # None: no matrix; empty: a matrix that failed validation (its problems are already recorded)
    combinations: list[Combination] | None = None
    matrix_keys: set[str] = field(default_factory=set)
    fail_fast: bool = True
    max_parallel: int | None = None

    def texts(self) -> Iterable[_Text]:
        """Every string `${{ matrix.x }}` is substituted in."""
        for text in (self.name, self.image, *self.env.values()):
            if text is not None:
                yield text
        for step in self.steps:
            for text in (step.name, step.run, step.working_directory, *step.env.values()):
                if text is not None:
                    yield text


# --- validation --------------------------------------------------------------------------------


class _Parser:
    def __init__(self, problems: _Problems) -> None:
        self.problems = problems

    def add(self, pos: Pos, message: str) -> None:
        self.problems.add(pos, message)

    def workflow(self, root: CommentedMap) -> WorkflowSpec:
        self.unknown_keys(root, WORKFLOW_KEYS, "the workflow")
        name = self.optional_str(root, "name", "the workflow")
        env = {k: t.value for k, t in self.env(root, "the workflow").items()}
        jobs = self.jobs(root)
        return WorkflowSpec(name=name.value if name else None, env=env, jobs=jobs)

    def unknown_keys(
        self,
        mapping: CommentedMap,
        allowed: tuple[str, ...],
        where: str,
        reported: tuple[str, ...] = (),
    ) -> None:
        for key in mapping:
            if key not in allowed and key not in reported:
                hint = _HINTS.get(key, "") if isinstance(key, str) else ""
                self.add(
                    _key_pos(mapping, key),
                    f"unknown key {_describe(key)} in {where}{hint}; "
                    f"allowed keys: {', '.join(allowed)}",
                )

    def optional_str(self, mapping: CommentedMap, key: str, where: str) -> _Text | None:
        if key not in mapping:
            return None
        value = mapping[key]
        if not isinstance(value, str) or not value.strip():
            self.add(
                _value_pos(mapping, key),
                f"`{key}` of {where} must be a non-empty string, not {_describe(value)}",
            )
            return None
        return _Text(str(value), _value_pos(mapping, key), f"`{key}` of {where}")

    def optional_bool(self, mapping: CommentedMap, key: str, where: str, default: bool) -> bool:
        if key not in mapping:
            return default
        value = mapping[key]
        if not isinstance(value, bool | ScalarBoolean):
            self.add(
                _value_pos(mapping, key),
                f"`{key}` of {where} must be true or false, not {_describe(value)}",
            )
            return default
        return bool(value)

    def timeout(self, mapping: CommentedMap, where: str) -> float | None:
        key = "timeout-minutes"
        if key not in mapping:
            return None
        value = mapping[key]
        if not _is_number(value) or not math.isfinite(value) or value <= 0:
            self.add(
                _value_pos(mapping, key),
                f"`{key}` of {where} must be a number greater than 0, not {_describe(value)}",
            )
            return None
        return float(value)

    def condition(self, mapping: CommentedMap, where: str) -> Condition:
        if "if" not in mapping:
            return Condition.default()
        value = mapping["if"]
        if not isinstance(value, str):
            self.add(
                _value_pos(mapping, "if"),
                f"`if` of {where} must be an expression string such as 'success()', "
                f"not {_describe(value)}",
            )
            return Condition.default()
        try:
            return parse_condition(str(value))
        except ValueError as exc:
            self.add(_value_pos(mapping, "if"), f"`if` of {where}: {exc}")
            return Condition.default()

    def env(self, mapping: CommentedMap, where: str) -> dict[str, _Text]:
        if "env" not in mapping:
            return {}
        env = mapping["env"]
        if not isinstance(env, CommentedMap):
            self.add(
                _value_pos(mapping, "env"),
                f"`env` of {where} must be a mapping of names to values, not {_describe(env)}",
            )
            return {}
        result: dict[str, _Text] = {}
        for name, value in env.items():
            if not isinstance(name, str) or not name or "=" in name or "\0" in name:
                self.add(
                    _key_pos(env, name),
                    f"environment variable name {_describe(name)} in {where} is not valid "
                    "(it must be a non-empty string without '=')",
                )
                continue
            text = _scalar_text(value)
            if text is None:
                self.add(
                    _value_pos(env, name),
                    f"environment variable {name!r} of {where} must be a string, number, "
                    f"boolean or null, not {_describe(value)} (quote it to keep it as text)",
                )
                continue
            label = f"environment variable {name!r} of {where}"
            result[str(name)] = _Text(text, _value_pos(env, name), label)
        return result

    # --- jobs ----------------------------------------------------------------------------------

    def jobs(self, root: CommentedMap) -> tuple[JobSpec, ...]:
        if "jobs" not in root:
            self.add(_node_pos(root), "the workflow has no `jobs` key")
            return ()
        jobs_map = root["jobs"]
        if not isinstance(jobs_map, CommentedMap) or not jobs_map:
            self.add(
                _value_pos(root, "jobs"),
                f"`jobs` must be a non-empty mapping of job ids to jobs, not {_describe(jobs_map)}",
            )
            return ()
        jobs: list[_Job] = []
        for key, body in jobs_map.items():
            pos = _key_pos(jobs_map, key)
            if not isinstance(key, str) or not JOB_ID.fullmatch(key):
                self.add(
                    pos,
                    f"job id {_describe(key)} is not valid: it must start with a letter or '_' "
                    "and contain only letters, digits, '_' and '-'",
                )
                if not isinstance(key, str):
                    continue
            job = _Job(key=str(key), pos=pos)
            jobs.append(job)
            if not isinstance(body, CommentedMap):
                self.add(
                    _value_pos(jobs_map, key),
                    f"job {job.key!r} must be a mapping with `steps`, not {_describe(body)}",
                )
                continue
            self.job(job, body)
        order = self.graph(jobs)
        for job in jobs:
            self.check_references(job)
        if self.problems.items:
            return ()
        return _expand(jobs, order)

    def job(self, job: _Job, body: CommentedMap) -> None:
        where = f"job {job.key!r}"
        self.unknown_keys(body, JOB_KEYS, where)
        job.name = self.optional_str(body, "name", where)
        job.image = self.optional_str(body, "image", where)
        job.env = self.env(body, where)
        job.timeout_minutes = self.timeout(body, where)
        job.condition = self.condition(body, where)
        job.needs = self.needs(body, where)
        if "strategy" in body:
            self.strategy(job, body)
        self.steps(job, body)

    def needs(self, body: CommentedMap, where: str) -> list[tuple[str, Pos]]:
        if "needs" not in body:
            return []
        value = body["needs"]
        message = f"`needs` of {where} must be a job id or a list of job ids"
        if isinstance(value, str):
            return [(str(value), _value_pos(body, "needs"))]
        if not isinstance(value, CommentedSeq):
            self.add(_value_pos(body, "needs"), f"{message}, not {_describe(value)}")
            return []
        needs: list[tuple[str, Pos]] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.add(_item_pos(value, i), f"{message}, not {_describe(item)} in the list")
            elif item not in (name for name, _ in needs):  # repeating a need changes nothing
                needs.append((str(item), _item_pos(value, i)))
        return needs

    def steps(self, job: _Job, body: CommentedMap) -> None:
        where = f"job {job.key!r}"
        if "steps" not in body:
            self.add(job.pos, f"{where} has no `steps`")
            return
        steps = body["steps"]
        if not isinstance(steps, CommentedSeq) or not steps:
            self.add(
                _value_pos(body, "steps"),
                f"`steps` of {where} must be a non-empty list of steps, not {_describe(steps)}",
            )
            return
        for i, step_body in enumerate(steps):
            step_where = f"step {i + 1} of {where}"
            if not isinstance(step_body, CommentedMap):
                self.add(
                    _item_pos(steps, i),
                    f"{step_where} must be a mapping with `run`, not {_describe(step_body)}",
                )
                continue
            step = self.step(step_body, step_where, _item_pos(steps, i))
            if step is not None:
                job.steps.append(step)

    def step(self, body: CommentedMap, where: str, pos: Pos) -> _Step | None:
        if "uses" in body:
            self.add(
                _key_pos(body, "uses"),
                f"{where}: actions are not supported (`uses:`); write a `run:` step instead",
            )
        self.unknown_keys(body, STEP_KEYS, where, reported=("uses",))
        name = self.optional_str(body, "name", where)
        env = self.env(body, where)
        condition = self.condition(body, where)
        continue_on_error = self.optional_bool(body, "continue-on-error", where, default=False)
        timeout_minutes = self.timeout(body, where)
        working_directory = self.optional_str(body, "working-directory", where)
        shell: Shell = "bash"
        if "shell" in body:
            value = body["shell"]
            if value in SHELLS:
                shell = "sh" if value == "sh" else "bash"
            else:
                self.add(
                    _value_pos(body, "shell"),
                    f"`shell` of {where} must be one of {', '.join(SHELLS)}, "
                    f"not {_describe(value)}",
                )
        run: _Text | None = None
        if "run" in body:
            run = self.optional_str(body, "run", where)
        elif "uses" not in body:
            self.add(pos, f"{where} has no `run`")
        if run is None:
            return None
        return _Step(
            run=run,
            name=name,
            env=env,
            condition=condition,
            continue_on_error=continue_on_error,
            timeout_minutes=timeout_minutes,
            working_directory=working_directory,
            shell=shell,
        )

    # --- strategy and matrix -------------------------------------------------------------------

    def strategy(self, job: _Job, body: CommentedMap) -> None:
        where = f"the strategy of job {job.key!r}"
        strategy = body["strategy"]
        job.combinations = []  # until a valid matrix replaces it
        if not isinstance(strategy, CommentedMap):
            self.add(
                _value_pos(body, "strategy"),
                f"`strategy` of job {job.key!r} must be a mapping with a `matrix`, "
                f"not {_describe(strategy)}",
            )
            return
        self.unknown_keys(strategy, STRATEGY_KEYS, where)
        job.fail_fast = self.optional_bool(strategy, "fail-fast", where, default=True)
        if "max-parallel" in strategy:
            value = strategy["max-parallel"]
            if _is_number(value) and isinstance(value, int) and value >= 1:
                job.max_parallel = int(value)
            else:
                self.add(
                    _value_pos(strategy, "max-parallel"),
                    f"`max-parallel` of {where} must be a whole number of at least 1, "
                    f"not {_describe(value)}",
                )
        if "matrix" not in strategy:
            self.add(_key_pos(body, "strategy"), f"`strategy` of job {job.key!r} has no `matrix`")
            return
        job.combinations = self.matrix(job, strategy)

    def matrix(self, job: _Job, strategy: CommentedMap) -> list[Combination]:
        """The job's combinations; [] after recording the problems if the matrix is not valid."""
        where = f"the matrix of job {job.key!r}"
        matrix = strategy["matrix"]
        matrix_pos = _key_pos(strategy, "matrix")
        if not isinstance(matrix, CommentedMap):
            self.add(
                _value_pos(strategy, "matrix"),
                f"`matrix` of job {job.key!r} must be a mapping of keys to lists of values, "
                f"not {_describe(matrix)}",
            )
            return []
        valid = True
        axes: dict[str, list[str]] = {}
        for key, values in matrix.items():
            if key in ("include", "exclude"):
                continue
            if not isinstance(key, str) or not MATRIX_KEY.fullmatch(key):
                self.add(_key_pos(matrix, key), _bad_matrix_key(key, where))
                valid = False
                continue
            if not isinstance(values, CommentedSeq) or not values:
                self.add(
                    _value_pos(matrix, key),
                    f"matrix key {key!r} of job {job.key!r} must have a non-empty list of values, "
                    f"not {_describe(values)}",
                )
                valid = False
                continue
            texts: list[str] = []
            for i, value in enumerate(values):
                text = _scalar_text(value)
                if text is None:
                    self.add(
                        _item_pos(values, i),
                        f"value {i + 1} of matrix key {key!r} of job {job.key!r} must be a "
                        f"string, number or boolean, not {_describe(value)}",
                    )
                    valid = False
                else:
                    texts.append(text)
            axes[str(key)] = texts
        include = self.matrix_entries(job, matrix, "include", axis_names=None)
        axis_names = {k for k in matrix if k not in ("include", "exclude")}
        exclude = self.matrix_entries(job, matrix, "exclude", axis_names=axis_names)
        if include is None or exclude is None or not valid:
            return []
        job.matrix_keys = set(key_order(axes, include))

        size = product_size(axes)
        if size > ENUMERATION_LIMIT:
            self.add(
                matrix_pos,
                f"matrix of job {job.key!r} expands to {size} combinations before `exclude`; "
                f"the limit is {MAX_COMBINATIONS}",
            )
            return []
        combinations = expand_matrix(axes, include, exclude)
        if len(combinations) > MAX_COMBINATIONS:
            self.add(
                matrix_pos,
                f"matrix of job {job.key!r} expands to {len(combinations)} combinations; "
                f"the limit is {MAX_COMBINATIONS}",
            )
            return []
        if not combinations:
            self.add(matrix_pos, f"matrix of job {job.key!r} expands to no combinations")
            return []
        seen: set[str] = set()
        for combination in combinations:
            name = combination_name(job.key, combination)
            if name in seen:
                # Names are the jobs' identities (build_jobs.name), so they must be unique.
                self.add(
                    matrix_pos,
                    f"matrix of job {job.key!r} produces the combination {name!r} more than once",
                )
                valid = False
            seen.add(name)
        return combinations if valid else []

    def matrix_entries(
        self, job: _Job, matrix: CommentedMap, name: str, axis_names: set[Any] | None
    ) -> list[Combination] | None:
        """`include` or `exclude` entries; None after recording problems if any is not valid.

        Exclude entries (axis_names given) may only name matrix keys: one that names anything
        else can never match, which is always a mistake.
        """
        if name not in matrix:
            return []
        entries = matrix[name]
        where = f"the matrix of job {job.key!r}"
        if not isinstance(entries, CommentedSeq):
            self.add(
                _value_pos(matrix, name),
                f"`{name}` of {where} must be a list of mappings, not {_describe(entries)}",
            )
            return None
        valid = True
        result: list[Combination] = []
        for i, entry in enumerate(entries):
            entry_where = f"`{name}` entry {i + 1} of {where}"
            if not isinstance(entry, CommentedMap) or not entry:
                self.add(
                    _item_pos(entries, i),
                    f"{entry_where} must be a non-empty mapping, not {_describe(entry)}",
                )
                valid = False
                continue
            combination: Combination = {}
            for key, value in entry.items():
                text = _scalar_text(value)
                if not isinstance(key, str) or not MATRIX_KEY.fullmatch(key):
                    self.add(_key_pos(entry, key), _bad_matrix_key(key, entry_where))
                elif axis_names is not None and key not in axis_names:
                    self.add(
                        _key_pos(entry, key),
                        f"{entry_where} names {key!r}, which is not a key of the matrix",
                    )
                elif text is None:
                    self.add(
                        _value_pos(entry, key),
                        f"value of {key!r} in {entry_where} must be a string, number or "
                        f"boolean, not {_describe(value)}",
                    )
                else:
                    combination[str(key)] = text
                    continue
                valid = False
            result.append(combination)
        return result if valid else None

    # --- the graph -----------------------------------------------------------------------------

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
        for text in job.texts():
            for ref in dict.fromkeys(references(text.value)):
                if job.combinations is None:
                    self.add(
                        text.pos,
                        f"{text.label} refers to `matrix.{ref}`, but job {job.key!r} has no matrix",
                    )
                elif job.combinations and ref not in job.matrix_keys:
                    self.add(
                        text.pos,
                        f"{text.label} refers to `matrix.{ref}`, which is not a key of the "
                        f"matrix of job {job.key!r} (keys: {', '.join(sorted(job.matrix_keys))})",
                    )


def _bad_matrix_key(key: Any, where: str) -> str:
    return (
        f"matrix key {_describe(key)} in {where} is not valid: it must start with a letter or '_' "
        "and contain only letters, digits, '_' and '-'"
    )


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
    values = combination or {}

    def sub(text: _Text | None) -> str | None:
        return None if text is None else substitute(text.value, values)

    steps = tuple(
        StepSpec(
            index=i,
            name=sub(step.name) or _default_step_name(substitute(step.run.value, values)),
            run=substitute(step.run.value, values),
            env={k: substitute(v.value, values) for k, v in step.env.items()},
            condition=step.condition,
            continue_on_error=step.continue_on_error,
            timeout_minutes=step.timeout_minutes,
            working_directory=sub(step.working_directory),
            shell=step.shell,
        )
        for i, step in enumerate(job.steps)
    )
    return JobSpec(
        name=name,
        key=job.key,
        display_name=sub(job.name) or name,
        index=index,
        needs=needs,
        steps=steps,
        condition=job.condition,
        image=sub(job.image),
        env={k: substitute(v.value, values) for k, v in job.env.items()},
        timeout_minutes=job.timeout_minutes,
        matrix=dict(combination) if combination is not None else None,
        fail_fast=job.fail_fast,
        max_parallel=job.max_parallel,
    )


def _default_step_name(run: str) -> str:
    first = next((line.strip() for line in run.splitlines() if line.strip()), "")
    return first[:STEP_NAME_LIMIT]
