"""Table-driven expression cases: GitHub's published cases, ported, plus our own.

Each file in `cases/` is a JSON list of cases in our own format:
  {"group", "expr", "contexts"?, "kind", "value"}           → evaluates to that value and kind
  {"group", "expr", "contexts"?, "error": "syntax", "offset"?} → ExpressionSyntaxError there
  {"group", "expr", "contexts"?, "error": "eval"}            → ExpressionEvalError
  {"group", "expr", "contexts", "error": "context", "offset"} → `check` with only the given
                                                              contexts allowed reports the name
`github_*.json` were ported from actions/languageservices `expressions/testdata` (GitHub's
cross-implementation suite); `our_*.json` are cases we wrote (`our_logical_table.json` is every
pair of twelve literals under `&&`, `||` and `!`, its expected values written out from the
documented rule: `a && b` is `a` when `a` is falsy, else `b`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from app.workflow.expressions import (
    ExpressionEvalError,
    ExpressionSyntaxError,
    check_expression,
    evaluate,
)

CASES_DIR = Path(__file__).parent / "cases"


def _load() -> list[Any]:
    params = []
    for path in sorted(CASES_DIR.glob("*.json")):
        for i, case in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            label = f"{path.stem}[{i}]:{case['group']}:{case['expr'][:60]}"
            params.append(pytest.param(case, id=label))
    return params


CASES = _load()


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    assert isinstance(value, dict), f"unexpected result type {type(value)!r}"
    return "object"


def same(actual: Any, expected: Any) -> bool:
    """Equal, with booleans never equal to numbers and NaN equal to NaN."""
    if kind_of(actual) != kind_of(expected):
        return False
    if isinstance(actual, list):
        return len(actual) == len(expected) and all(map(same, actual, expected))
    if isinstance(actual, dict):
        return actual.keys() == expected.keys() and all(
            same(actual[k], expected[k]) for k in actual
        )
    if isinstance(actual, float) and math.isnan(actual):
        return isinstance(expected, float) and math.isnan(expected)
    return bool(actual == expected)


def test_there_are_hundreds_of_cases() -> None:
    assert len(CASES) >= 1000


@pytest.mark.parametrize("case", CASES)
def test_case(case: dict[str, Any]) -> None:
    contexts = case.get("contexts") or {}
    error = case.get("error")
    if error is None:
        result = evaluate(case["expr"], contexts)
        assert kind_of(result) == case["kind"], result
        assert same(result, case["value"]), result
    elif error == "syntax":
        with pytest.raises(ExpressionSyntaxError) as info:
            evaluate(case["expr"], contexts)
        if "offset" in case:
            assert info.value.offset == case["offset"], info.value.message
    elif error == "eval":
        with pytest.raises(ExpressionEvalError):
            evaluate(case["expr"], contexts)
    else:
        assert error == "context"
        problems = check_expression(case["expr"], allowed_contexts=list(contexts))
        assert [p for p in problems if p[1].startswith("Unrecognized named-value")], problems
        assert problems[0][0] == case["offset"]
