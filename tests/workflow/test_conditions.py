"""The `if:` expression subset: grammar, precedence, the `${{ }}` wrapper and truth tables."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import NamedTuple

import pytest

from app.workflow.conditions import Condition, parse_condition


class State(NamedTuple):
    success: bool
    failure: bool
    cancelled: bool


# Every combination of the three inputs; always() has no input of its own.
STATES = [State(*values) for values in itertools.product([False, True], repeat=3)]

Reference = Callable[[State], bool]


def truth_table(condition: Condition) -> list[bool]:
    return [condition.evaluate(**state._asdict()) for state in STATES]


def expected_table(reference: Reference) -> list[bool]:
    return [reference(state) for state in STATES]


@pytest.mark.parametrize(
    ("text", "reference"),
    [
        ("success()", lambda x: x.success),
        ("failure()", lambda x: x.failure),
        ("cancelled()", lambda x: x.cancelled),
        ("always()", lambda _: True),
        ("!success()", lambda x: not x.success),
        ("!!success()", lambda x: x.success),
        ("!always()", lambda _: False),
        ("success() && failure()", lambda x: x.success and x.failure),
        ("success() || failure()", lambda x: x.success or x.failure),
        ("always() && cancelled()", lambda x: x.cancelled),
        ("always() || cancelled()", lambda _: True),
        ("failure() || cancelled()", lambda x: x.failure or x.cancelled),
        ("success() && !cancelled()", lambda x: x.success and not x.cancelled),
        # && binds tighter than ||, on either side
        (
            "success() || failure() && cancelled()",
            lambda x: x.success or (x.failure and x.cancelled),
        ),
        (
            "failure() && cancelled() || success()",
            lambda x: (x.failure and x.cancelled) or x.success,
        ),
        # ! binds tighter than && and ||
        ("!success() && failure()", lambda x: (not x.success) and x.failure),
        ("!success() || failure()", lambda x: (not x.success) or x.failure),
        ("!failure() && failure()", lambda _: False),
        # parentheses override precedence
        (
            "(success() || failure()) && cancelled()",
            lambda x: (x.success or x.failure) and x.cancelled,
        ),
        ("!(success() || failure())", lambda x: not (x.success or x.failure)),
        (
            "!(success() && failure()) && cancelled()",
            lambda x: not (x.success and x.failure) and x.cancelled,
        ),
        ("((success()))", lambda x: x.success),
        (
            "success() && failure() && cancelled()",
            lambda x: x.success and x.failure and x.cancelled,
        ),
        ("success() || failure() || cancelled()", lambda x: x.success or x.failure or x.cancelled),
        # whitespace is optional everywhere between tokens
        (
            "success()&&!failure()||cancelled()",
            lambda x: (x.success and not x.failure) or x.cancelled,
        ),
        ("  success ( )  &&  ! failure( )  ", lambda x: x.success and not x.failure),
        ("success()\n&& failure()", lambda x: x.success and x.failure),
        # the ${{ }} wrapper, with or without inner whitespace
        ("${{ success() }}", lambda x: x.success),
        ("${{success()}}", lambda x: x.success),
        ("  ${{ failure() || cancelled() }}  ", lambda x: x.failure or x.cancelled),
        ("${{ !(success() && !cancelled()) }}", lambda x: not (x.success and not x.cancelled)),
    ],
)
def test_truth_tables(text: str, reference: Reference) -> None:
    condition = parse_condition(text)
    assert truth_table(condition) == expected_table(reference)
    assert condition.source == text


def test_default_is_success() -> None:
    default = Condition.default()
    assert default.source == "success()"
    assert truth_table(default) == expected_table(lambda x: x.success)
    assert default == parse_condition("success()")


def test_always_is_true_even_when_cancelled_and_failed() -> None:
    condition = parse_condition("always()")
    assert condition.evaluate(success=False, failure=True, cancelled=True) is True
    assert condition.evaluate(success=False, failure=False, cancelled=False) is True


def test_str_is_the_source() -> None:
    assert str(parse_condition("${{ failure() }}")) == "${{ failure() }}"


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("", "the expression is empty"),
        ("   ", "the expression is empty"),
        ("${{ }}", "An expression was expected"),
        ("success(", "Unexpected end of expression"),
        ("success() &&", "Unexpected end of expression"),
        ("!", "Unexpected end of expression"),
        ("success() ? always() : failure()", "position"),
    ],
)
def test_syntax_errors_name_the_expression(text: str, detail: str) -> None:
    # issue 11: conditions are GitHub expressions (contexts, literals, functions); only syntax
    # errors are refused, with the position inside the text.
    with pytest.raises(ValueError, match="invalid expression") as info:
        parse_condition(text)
    assert detail in str(info.value)


@pytest.mark.parametrize(
    ("text", "contexts", "expected"),
    [
        ("github.ref == 'refs/heads/main'", {"github": {"ref": "refs/heads/main"}}, True),
        ("github.ref == 'refs/heads/main'", {"github": {"ref": "refs/heads/dev"}}, False),
        ("${{ env.DEPLOY == 'yes' }}", {"env": {"DEPLOY": "YES"}}, True),  # case-insensitive
        ("contains(github.event_name, 'push')", {"github": {"event_name": "push"}}, True),
        ("true", {}, True),
    ],
)
def test_contexts_are_evaluated(text: str, contexts: dict[str, object], expected: bool) -> None:
    condition = parse_condition(text)
    assert condition.evaluate(success=True, failure=False, cancelled=False, contexts=contexts) is (
        expected
    )
    # without a status function, a failure before it means it does not run (implicit success())
    assert not condition.evaluate(success=False, failure=True, cancelled=False, contexts=contexts)
