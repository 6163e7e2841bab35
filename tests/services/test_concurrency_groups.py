"""Evaluating `concurrency:` into a group (pure: no database)."""

from __future__ import annotations

from typing import Any

import pytest

from app.services.concurrency import KEY_MAX, Group, evaluate
from app.workflow.expressions import ExpressionError
from app.workflow.spec import Concurrency

CONTEXTS: dict[str, Any] = {
    "github": {"ref": "refs/heads/main", "event_name": "push", "workflow": "CI"},
    "inputs": {"force": True, "env": ""},
    "vars": {},
}


@pytest.mark.parametrize(
    ("concurrency", "expected"),
    [
        (None, None),
        (Concurrency("deploy"), Group("deploy", False)),
        (Concurrency("${{ github.workflow }}-${{ github.ref }}"), Group("CI-refs/heads/main")),
        (Concurrency("g", True), Group("g", True)),
        (Concurrency("g", "${{ github.ref != 'refs/heads/main' }}"), Group("g", False)),
        (Concurrency("g", "${{ inputs.force }}"), Group("g", True)),
        (Concurrency("g", "${{ github.event_name }}"), Group("g", False)),  # 'push' is not true
        (Concurrency("${{ inputs.env }}"), None),  # an empty group is no group
    ],
)
def test_evaluate(concurrency: Concurrency | None, expected: Group | None) -> None:
    assert evaluate(concurrency, CONTEXTS) == expected


def test_evaluation_errors_are_raised() -> None:
    with pytest.raises(ExpressionError):
        evaluate(Concurrency("${{ fromJSON('nope') }}"), CONTEXTS)


def test_keys_ignore_case_and_long_names_stay_distinct_within_the_column() -> None:
    assert Group("Deploy-PROD").key == Group("deploy-prod").key == "deploy-prod"
    a, b = Group("x" * 300 + "a"), Group("x" * 300 + "b")
    assert len(a.key) <= KEY_MAX and len(b.key) <= KEY_MAX
    assert a.key != b.key
