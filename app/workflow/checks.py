"""Keys and shapes: which keys GitHub's workflow syntax allows where, and the value checks shared
by every level (strings, booleans, numbers, env mappings, values that may be expressions).

Every check records a problem with the position of the offending key or value and returns a
usable default, so validation goes on and one pass reports every mistake.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.scalarbool import ScalarBoolean

from app.workflow import expressions as ex
from app.workflow.conditions import Condition, condition_problems
from app.workflow.loader import (
    Pos,
    Problems,
    describe,
    is_number,
    key_pos,
    scalar_text,
    value_pos,
)

# GitHub's "Workflow syntax" keys, in its documentation's order, plus our `image:` and
# `kubernetes:` job extensions.
WORKFLOW_KEYS = (
    "name",
    "run-name",
    "on",
    "permissions",
    "env",
    "defaults",
    "concurrency",
    "jobs",
)
JOB_KEYS = (
    "name",
    "permissions",
    "needs",
    "if",
    "runs-on",
    "environment",
    "concurrency",
    "outputs",
    "env",
    "defaults",
    "steps",
    "timeout-minutes",
    "strategy",
    "continue-on-error",
    "container",
    "services",
    "uses",
    "with",
    "secrets",
    "image",
    "kubernetes",
)
STEP_KEYS = (
    "id",
    "if",
    "name",
    "uses",
    "run",
    "working-directory",
    "shell",
    "with",
    "env",
    "continue-on-error",
    "timeout-minutes",
)
STRATEGY_KEYS = ("matrix", "fail-fast", "max-parallel")
DEFAULTS_KEYS = ("run",)
RUN_DEFAULTS_KEYS = ("shell", "working-directory")
CONCURRENCY_KEYS = ("group", "cancel-in-progress")
ENVIRONMENT_KEYS = ("name", "url", "deployment")
CONTAINER_KEYS = ("image", "credentials", "env", "ports", "volumes", "options")
KUBERNETES_KEYS = (
    "resources",
    "node-selector",
    "tolerations",
    "service-account-name",
    "image-pull-secrets",
    "runtime-class-name",
    "priority-class-name",
)


@dataclass
class Text:
    """A string that may hold `${{ }}` expressions, and where it came from."""

    value: str
    pos: Pos
    label: str  # e.g. "`run` of step 1 of job 'test'"


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and "${{" in value


class Checker:
    """Collects problems; the value checks every level of the workflow shares."""

    def __init__(self, problems: Problems, source: str = "") -> None:
        self.problems = problems
        self.lines = source.split("\n")

    def offset_pos(self, pos: Pos, value: str, offset: int) -> Pos:
        """The line and column of `value[offset]`, for a scalar whose token starts at `pos`.

        Block scalars (`|`, `>`) start on the next line at their indentation; quoted scalars one
        column after the quote. Escapes and folded line breaks inside quoted scalars are not
        replayed: the position is then the best estimate on the scalar's first line."""
        line, column = pos
        if not 0 < line <= len(self.lines):
            return pos
        token = self.lines[line - 1][column - 1 : column]
        before = value[:offset]
        if token in ("|", ">"):
            first = line + 1
            while first <= len(self.lines) and not self.lines[first - 1].strip():
                first += 1
            if first > len(self.lines):
                return pos
            indent = len(self.lines[first - 1]) - len(self.lines[first - 1].lstrip(" "))
            if token == ">":
                return first, indent + 1
            breaks = before.count("\n")
            return first + breaks, indent + len(before) - (before.rfind("\n") + 1) + 1
        if "\n" in before:
            return pos
        return line, column + len(before) + (1 if token in ("'", '"') else 0)

    def expressions(self, text: Text, *, allow_status_functions: bool = False) -> None:
        """Syntax, functions and argument counts of every `${{ }}` in `text`."""
        if "${{" not in text.value:
            return
        for offset, message in ex.check(text.value, allow_status_functions=allow_status_functions):
            self.add(self.offset_pos(text.pos, text.value, offset), f"{text.label}: {message}")

    def add(self, pos: Pos, message: str) -> None:
        self.problems.add(pos, message)

    def unknown_keys(
        self,
        mapping: CommentedMap,
        allowed: Sequence[str],
        where: str,
        reported: Sequence[str] = (),
    ) -> None:
        for key in mapping:
            if key in allowed or key in reported:
                continue
            hint = ""
            if isinstance(key, str):
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.7)
                if close:
                    hint = f" (did you mean {close[0]!r}?)"
            self.add(
                key_pos(mapping, key),
                f"unknown key {describe(key)} in {where}{hint}; allowed keys: {', '.join(allowed)}",
            )

    def mapping(self, parent: CommentedMap, key: str, where: str, what: str) -> CommentedMap | None:
        """parent[key] when it is a mapping; records a problem (and returns None) otherwise."""
        if key not in parent:
            return None
        value = parent[key]
        if not isinstance(value, CommentedMap):
            self.add(
                value_pos(parent, key),
                f"`{key}` of {where} must be {what}, not {describe(value)}",
            )
            return None
        return value

    def optional_str(self, mapping: CommentedMap, key: str, where: str) -> Text | None:
        if key not in mapping:
            return None
        value = mapping[key]
        if not isinstance(value, str) or not value.strip():
            self.add(
                value_pos(mapping, key),
                f"`{key}` of {where} must be a non-empty string, not {describe(value)}",
            )
            return None
        return Text(str(value), value_pos(mapping, key), f"`{key}` of {where}")

    def optional_bool(self, mapping: CommentedMap, key: str, where: str, default: bool) -> bool:
        if key not in mapping:
            return default
        value = mapping[key]
        if not isinstance(value, bool | ScalarBoolean):
            self.add(
                value_pos(mapping, key),
                f"`{key}` of {where} must be true or false, not {describe(value)}",
            )
            return default
        return bool(value)

    def bool_or_expression(
        self, mapping: CommentedMap, key: str, where: str, default: bool
    ) -> bool | Text:
        """A boolean, or an expression evaluated when the job or step runs."""
        if key in mapping and is_expression(mapping[key]):
            return Text(str(mapping[key]), value_pos(mapping, key), f"`{key}` of {where}")
        return self.optional_bool(mapping, key, where, default)

    def timeout(self, mapping: CommentedMap, where: str) -> float | Text | None:
        key = "timeout-minutes"
        if key not in mapping:
            return None
        value = mapping[key]
        if is_expression(value):
            return Text(str(value), value_pos(mapping, key), f"`{key}` of {where}")
        if not is_number(value) or not math.isfinite(value) or value <= 0:
            self.add(
                value_pos(mapping, key),
                f"`{key}` of {where} must be a number greater than 0, not {describe(value)}",
            )
            return None
        return float(value)

    def condition(self, mapping: CommentedMap, where: str) -> Condition:
        if "if" not in mapping:
            return Condition.default()
        value = mapping["if"]
        if not isinstance(value, str):
            self.add(
                value_pos(mapping, "if"),
                f"`if` of {where} must be an expression string such as 'success()', "
                f"not {describe(value)}",
            )
            return Condition.default()
        problems = condition_problems(str(value))
        for offset, message in problems:
            pos = self.offset_pos(value_pos(mapping, "if"), str(value), offset)
            self.add(pos, f"`if` of {where}: {message}")
        return Condition.default() if problems else Condition(str(value))

    def string_map(
        self, mapping: CommentedMap, key: str, where: str, what: str = "environment variable"
    ) -> dict[str, Text]:
        """`env:`, `with:`, `outputs:`: names to scalar values (kept as text)."""
        if key not in mapping:
            return {}
        env = mapping[key]
        if isinstance(env, str) and is_expression(env):
            # `env: ${{ fromJSON(...) }}` is valid on GitHub; we do not evaluate a whole mapping.
            self.add(
                value_pos(mapping, key),
                f"`{key}` of {where} as one expression is not supported; list the names",
            )
            return {}
        if not isinstance(env, CommentedMap):
            self.add(
                value_pos(mapping, key),
                f"`{key}` of {where} must be a mapping of names to values, not {describe(env)}",
            )
            return {}
        result: dict[str, Text] = {}
        for name, value in env.items():
            if not isinstance(name, str) or not name or "=" in name or "\0" in name:
                self.add(
                    key_pos(env, name),
                    f"{what} name {describe(name)} in {where} is not valid "
                    "(it must be a non-empty string without '=')",
                )
                continue
            text = scalar_text(value)
            if text is None:
                self.add(
                    value_pos(env, name),
                    f"{what} {name!r} of {where} must be a string, number, "
                    f"boolean or null, not {describe(value)} (quote it to keep it as text)",
                )
                continue
            label = f"{what} {name!r} of {where}"
            result[str(name)] = Text(text, value_pos(env, name), label)
        return result

    def env(self, mapping: CommentedMap, where: str) -> dict[str, Text]:
        return self.string_map(mapping, "env", where)

    def string_list(self, mapping: CommentedMap, key: str, where: str) -> list[str]:
        """A string or a list of strings (`runs-on`, `image-pull-secrets`)."""
        value = mapping[key]
        if isinstance(value, str):
            return [str(value)]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [str(v) for v in value]
        self.add(
            value_pos(mapping, key),
            f"`{key}` of {where} must be a string or a list of strings, not {describe(value)}",
        )
        return []
