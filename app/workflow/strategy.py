"""`strategy:` validation: the matrix (axes, include, exclude), fail-fast and max-parallel.

Expansion itself (GitHub's include/exclude rules) is app/workflow/matrix.py; this module checks
the shapes and positions and hands it validated values. Matrix values may be strings, numbers,
booleans, lists or mappings, as on GitHub.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from app.workflow import expressions as ex
from app.workflow.checks import STRATEGY_KEYS, Checker
from app.workflow.loader import (
    describe,
    is_number,
    item_pos,
    key_pos,
    plain,
    scalar_text,
    value_pos,
)
from app.workflow.matrix import (
    MAX_COMBINATIONS,
    Combination,
    combination_name,
    expand_matrix,
    key_order,
    product_size,
)

MATRIX_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# Beyond this many base combinations we refuse to enumerate them just to count how many `exclude`
# would remove: a matrix that large is a mistake whatever its excludes say.
ENUMERATION_LIMIT = 65_536


@dataclass
class Strategy:
    key: str  # the job id
    # None: no matrix; empty: a matrix that failed validation (its problems are already recorded)
    combinations: list[Combination] | None = None
    matrix_keys: set[str] = field(default_factory=set)
    fail_fast: bool = True
    max_parallel: int | None = None
    # A matrix with `${{ }}` in it (e.g. `fromJSON(needs.x.outputs.y)`): expanded by the executor
    # when the job's needs have finished (`expand_template`); until then one placeholder job.
    matrix_template: Any = None


def matrix_value(value: Any) -> Any:
    """A matrix value as plain data: scalars as their text, lists and mappings as they are."""
    text = scalar_text(value)
    if text is not None:
        return text
    if isinstance(value, list | dict):
        return plain(value)
    return None


def parse_strategy(checker: Checker, job: Strategy, body: CommentedMap) -> None:
    where = f"the strategy of job {job.key!r}"
    strategy = body["strategy"]
    job.combinations = []  # until a valid matrix replaces it
    if not isinstance(strategy, CommentedMap):
        checker.add(
            value_pos(body, "strategy"),
            f"`strategy` of job {job.key!r} must be a mapping with a `matrix`, "
            f"not {describe(strategy)}",
        )
        return
    checker.unknown_keys(strategy, STRATEGY_KEYS, where)
    job.fail_fast = checker.optional_bool(strategy, "fail-fast", where, default=True)
    if "max-parallel" in strategy:
        value = strategy["max-parallel"]
        if is_number(value) and isinstance(value, int) and value >= 1:
            job.max_parallel = int(value)
        else:
            checker.add(
                value_pos(strategy, "max-parallel"),
                f"`max-parallel` of {where} must be a whole number of at least 1, "
                f"not {describe(value)}",
            )
    if "matrix" not in strategy:
        job.combinations = None  # GitHub accepts a strategy without a matrix: one plain job
        return
    template = plain(strategy["matrix"])
    if _has_expression(template):
        job.combinations = None
        job.matrix_template = template
        for text in _strings(template):
            for _, message in ex.check(text):
                checker.add(
                    key_pos(strategy, "matrix"),
                    f"matrix of job {job.key!r}: {message} (in {text!r})",
                )
        return
    job.combinations = _matrix(checker, job, strategy)


def _has_expression(value: Any) -> bool:
    return any("${{" in text for text in _strings(value))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


class MatrixError(ValueError):
    """A matrix computed at run time is not valid; the job fails with this message."""


def _evaluate(value: Any, contexts: dict[str, Any]) -> Any:
    """Evaluate every `${{ }}` in a matrix template as GitHub's template engine does: a string
    that is one expression keeps its raw value; `${{ insert }}` keys merge a mapping; a sequence
    item that evaluates to a list is spliced in."""
    if isinstance(value, str):
        return ex.evaluate_template(value, contexts) if "${{" in value else value
    if isinstance(value, list):
        items: list[Any] = []
        for item in value:
            result = _evaluate(item, contexts)
            if isinstance(item, str) and "${{" in item and isinstance(result, list):
                items.extend(result)
            else:
                items.append(result)
        return items
    if isinstance(value, dict):
        result_map: dict[str, Any] = {}
        for key, item in value.items():
            evaluated = _evaluate(item, contexts)
            if key.replace(" ", "") == "${{insert}}":
                if not isinstance(evaluated, dict):
                    raise MatrixError("`${{ insert }}` needs a mapping value")
                result_map.update(evaluated)
            else:
                result_map[ex.to_string(_evaluate(key, contexts))] = evaluated
        return result_map
    return value


def expand_template(key: str, template: Any, contexts: dict[str, Any]) -> list[Combination]:
    """The combinations of a matrix computed at run time (raises MatrixError)."""
    try:
        matrix = _evaluate(template, contexts)
    except ex.ExpressionError as exc:
        raise MatrixError(f"Error evaluating the matrix of job {key!r}: {exc}") from None
    if not isinstance(matrix, dict):
        raise MatrixError(f"the matrix of job {key!r} must be a mapping, not {matrix!r}")
    axes: dict[str, list[Any]] = {}
    for name, values in matrix.items():
        if name in ("include", "exclude"):
            continue
        if not isinstance(values, list) or not values:
            raise MatrixError(
                f"matrix key {name!r} of job {key!r} must have a non-empty list of values"
            )
        axes[name] = [matrix_value(v) for v in values]
    entries: dict[str, list[Combination]] = {}
    for name in ("include", "exclude"):
        raw = matrix.get(name) or []
        if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
            raise MatrixError(f"`{name}` of the matrix of job {key!r} must be a list of mappings")
        entries[name] = [{k: matrix_value(v) for k, v in e.items()} for e in raw]
    if product_size(axes) > ENUMERATION_LIMIT:
        raise MatrixError(f"the matrix of job {key!r} is too large")
    combinations = expand_matrix(axes, entries["include"], entries["exclude"])
    if not combinations:
        raise MatrixError(f"the matrix of job {key!r} expands to no combinations")
    if len(combinations) > MAX_COMBINATIONS:
        raise MatrixError(
            f"the matrix of job {key!r} expands to {len(combinations)} combinations; "
            f"the limit is {MAX_COMBINATIONS}"
        )
    if len({combination_name(key, c) for c in combinations}) < len(combinations):
        raise MatrixError(f"the matrix of job {key!r} produces a combination more than once")
    return combinations


def _matrix(checker: Checker, job: Strategy, strategy: CommentedMap) -> list[Combination]:
    """The job's combinations; [] after recording the problems if the matrix is not valid."""
    where = f"the matrix of job {job.key!r}"
    matrix = strategy["matrix"]
    matrix_pos = key_pos(strategy, "matrix")
    if not isinstance(matrix, CommentedMap):
        checker.add(
            value_pos(strategy, "matrix"),
            f"`matrix` of job {job.key!r} must be a mapping of keys to lists of values, "
            f"not {describe(matrix)}",
        )
        return []
    valid = True
    axes: dict[str, list[str]] = {}
    for key, values in matrix.items():
        if key in ("include", "exclude"):
            continue
        if not isinstance(key, str) or not MATRIX_KEY.fullmatch(key):
            checker.add(key_pos(matrix, key), _bad_matrix_key(key, where))
            valid = False
            continue
        if not isinstance(values, CommentedSeq) or not values:
            checker.add(
                value_pos(matrix, key),
                f"matrix key {key!r} of job {job.key!r} must have a non-empty list of values, "
                f"not {describe(values)}",
            )
            valid = False
            continue
        texts: list[Any] = []
        for i, value in enumerate(values):
            text = matrix_value(value)
            if text is None:
                checker.add(
                    item_pos(values, i),
                    f"value {i + 1} of matrix key {key!r} of job {job.key!r} must be a "
                    f"string, number, boolean, list or mapping, not {describe(value)}",
                )
                valid = False
            else:
                texts.append(text)
        axes[str(key)] = texts
    include = _matrix_entries(checker, job, matrix, "include", axis_names=None)
    axis_names = {k for k in matrix if k not in ("include", "exclude")}
    exclude = _matrix_entries(checker, job, matrix, "exclude", axis_names=axis_names)
    if include is None or exclude is None or not valid:
        return []
    job.matrix_keys = set(key_order(axes, include))

    size = product_size(axes)
    if size > ENUMERATION_LIMIT:
        checker.add(
            matrix_pos,
            f"matrix of job {job.key!r} expands to {size} combinations before `exclude`; "
            f"the limit is {MAX_COMBINATIONS}",
        )
        return []
    combinations = expand_matrix(axes, include, exclude)
    if len(combinations) > MAX_COMBINATIONS:
        checker.add(
            matrix_pos,
            f"matrix of job {job.key!r} expands to {len(combinations)} combinations; "
            f"the limit is {MAX_COMBINATIONS}",
        )
        return []
    if not combinations:
        checker.add(matrix_pos, f"matrix of job {job.key!r} expands to no combinations")
        return []
    seen: set[str] = set()
    for combination in combinations:
        name = combination_name(job.key, combination)
        if name in seen:
            # Names are the jobs' identities (build_jobs.name), so they must be unique.
            checker.add(
                matrix_pos,
                f"matrix of job {job.key!r} produces the combination {name!r} more than once",
            )
            valid = False
        seen.add(name)
    return combinations if valid else []


def _matrix_entries(
    checker: Checker, job: Strategy, matrix: CommentedMap, name: str, axis_names: set[Any] | None
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
        checker.add(
            value_pos(matrix, name),
            f"`{name}` of {where} must be a list of mappings, not {describe(entries)}",
        )
        return None
    valid = True
    result: list[Combination] = []
    for i, entry in enumerate(entries):
        entry_where = f"`{name}` entry {i + 1} of {where}"
        if not isinstance(entry, CommentedMap) or not entry:
            checker.add(
                item_pos(entries, i),
                f"{entry_where} must be a non-empty mapping, not {describe(entry)}",
            )
            valid = False
            continue
        combination: Combination = {}
        for key, value in entry.items():
            text = matrix_value(value)
            if not isinstance(key, str) or not MATRIX_KEY.fullmatch(key):
                checker.add(key_pos(entry, key), _bad_matrix_key(key, entry_where))
            elif axis_names is not None and key not in axis_names:
                checker.add(
                    key_pos(entry, key),
                    f"{entry_where} names {key!r}, which is not a key of the matrix",
                )
            elif text is None:
                checker.add(
                    value_pos(entry, key),
                    f"value of {key!r} in {entry_where} must be a string, number or "
                    f"boolean, not {describe(value)}",
                )
            else:
                combination[str(key)] = text
                continue
            valid = False
        result.append(combination)
    return result if valid else None


def _bad_matrix_key(key: Any, where: str) -> str:
    return (
        f"matrix key {describe(key)} in {where} is not valid: it must start with a letter or '_' "
        "and contain only letters, digits, '_' and '-'"
    )
