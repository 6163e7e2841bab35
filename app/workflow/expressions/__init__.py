"""GitHub Actions' `${{ }}` expression language, with GitHub's grammar, semantics and functions.

Our own implementation (no maintained Python library implements GitHub's dialect: its loose
equality, case-insensitive strings, object filters and `format`/`toJSON` output), written from
GitHub's "Expressions" documentation and checked against the test cases GitHub publishes for its
own implementations (tests/workflow/expressions/).

Modules: `lexer` (tokens), `parser` + `nodes` (syntax tree), `values` (coercion, JSON),
`functions`, `evaluator`, `template` (`${{ }}` inside strings).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from app.workflow.expressions.availability import AVAILABILITY, Availability, check_key
from app.workflow.expressions.errors import (
    MAX_DEPTH,
    MAX_EXPRESSION_LENGTH,
    ExpressionError,
    ExpressionEvalError,
    ExpressionSyntaxError,
)
from app.workflow.expressions.evaluator import KNOWN_CONTEXTS, Evaluator
from app.workflow.expressions.functions import STATUS_FUNCTIONS, CallContext, Status
from app.workflow.expressions.nodes import Node
from app.workflow.expressions.parser import parse
from app.workflow.expressions.template import (
    Segment,
    check,
    check_expression,
    single_expression,
    split_template,
    uses_status_function,
)
from app.workflow.expressions.values import plain, to_json, to_string, truthy

__all__ = [
    "AVAILABILITY",
    "KNOWN_CONTEXTS",
    "MAX_DEPTH",
    "MAX_EXPRESSION_LENGTH",
    "STATUS_FUNCTIONS",
    "Availability",
    "ExpressionError",
    "ExpressionEvalError",
    "ExpressionSyntaxError",
    "HashFiles",
    "Node",
    "Segment",
    "Status",
    "check",
    "check_expression",
    "check_key",
    "condition",
    "evaluate",
    "evaluate_structure",
    "evaluate_template",
    "interpolate",
    "parse",
    "split_template",
    "to_json",
    "to_string",
    "truthy",
    "uses_status_function",
]

HashFiles = Callable[[list[str]], str]


def evaluate(
    expression: str | Node,
    contexts: Mapping[str, Any],
    *,
    status: Status | None = None,
    hash_files: HashFiles | None = None,
) -> Any:
    """The value of a bare expression (the text inside `${{ }}`, or a parsed tree).

    Context names and property names match case-insensitively; a missing property is None.
    Raises ExpressionSyntaxError or ExpressionEvalError.
    """
    return _evaluate(expression, contexts, CallContext(status or Status(), hash_files))


def _evaluate(expression: str | Node, contexts: Mapping[str, Any], calls: CallContext) -> Any:
    tree = parse(expression) if isinstance(expression, str) else expression
    try:
        return plain(Evaluator(contexts, calls).eval(tree))
    except RecursionError:
        # Trees are at most MAX_DEPTH deep, so this needs a caller's deeply nested data.
        raise ExpressionEvalError("The expression's data is nested too deeply") from None


def interpolate(
    text: str,
    contexts: Mapping[str, Any],
    *,
    status: Status | None = None,
    hash_files: HashFiles | None = None,
) -> str:
    """`text` with every `${{ }}` replaced by its value as a string (null → '', arrays and
    objects → JSON)."""
    calls = CallContext(status or Status(), hash_files)
    out: list[str] = []
    for segment in split_template(text):
        if segment.expression is None:
            out.append(segment.literal or "")
            continue
        try:
            value = _evaluate(segment.expression, contexts, calls)
        except ExpressionSyntaxError as exc:
            raise exc.shifted(segment.offset) from None
        out.append(to_string(value))
    return "".join(out)


def evaluate_template(
    text: str,
    contexts: Mapping[str, Any],
    *,
    status: Status | None = None,
    hash_files: HashFiles | None = None,
) -> Any:
    """The raw value when `text` is exactly one `${{ expr }}` (so `fromJSON` can yield a list
    or mapping), otherwise the interpolated string."""
    inner = single_expression(text)
    if inner is None:
        return interpolate(text, contexts, status=status, hash_files=hash_files)
    offset = text.index("${{") + 3
    try:
        return evaluate(inner, contexts, status=status, hash_files=hash_files)
    except ExpressionSyntaxError as exc:
        raise exc.shifted(offset) from None


def evaluate_structure(
    value: Any,
    contexts: Mapping[str, Any],
    *,
    status: Status | None = None,
    hash_files: HashFiles | None = None,
) -> Any:
    """Every string in a YAML-like structure (lists, mappings, scalars) evaluated with
    `evaluate_template`; mapping keys are interpolated to strings. For values such as `with:`,
    `env:` or a `strategy.matrix` whose parts are expressions (`os: ${{ fromJSON(x) }}`)."""
    if isinstance(value, str):
        return evaluate_template(value, contexts, status=status, hash_files=hash_files)
    if isinstance(value, Mapping):
        return {
            (
                interpolate(key, contexts, status=status, hash_files=hash_files)
                if isinstance(key, str)
                else key
            ): evaluate_structure(item, contexts, status=status, hash_files=hash_files)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [
            evaluate_structure(item, contexts, status=status, hash_files=hash_files)
            for item in value
        ]
    return value


def condition(
    text: str,
    contexts: Mapping[str, Any],
    *,
    status: Status,
    hash_files: HashFiles | None = None,
) -> bool:
    """GitHub's `if:`: the text may be wrapped in `${{ }}` or not; without a status function it
    means `success() && (expr)`. A text mixing `${{ }}` with other text is a string (truthy
    unless empty), as on GitHub."""
    if not text.strip():
        # GitHub's runner treats an empty condition as the default one, `success()`.
        return status.success
    inner = single_expression(text)
    if inner is None and "${{" in text:
        return status.success and truthy(interpolate(text, contexts, status=status))
    expression = text if inner is None else inner
    if not uses_status_function(expression) and not status.success:
        return False
    try:
        value = evaluate(expression, contexts, status=status, hash_files=hash_files)
    except ExpressionSyntaxError as exc:
        raise exc.shifted(text.index("${{") + 3 if inner is not None else 0) from None
    return truthy(value)
