"""`if:` conditions: GitHub's full expression language (app/workflow/expressions), kept behind the
small `Condition` type that the runners already use.

A condition is checked for syntax when the workflow is parsed and evaluated when the job or step
is about to start, with the contexts known then. Without a status function, `if: X` means
`success() && (X)`, as on GitHub.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.workflow import expressions as ex
from app.workflow.expressions.template import single_expression


@dataclass(frozen=True)
class Condition:
    """An `if:` text; build one with `parse_condition` or `Condition.default()`."""

    source: str  # the expression text as written

    @classmethod
    def default(cls) -> Condition:
        """`success()`: what a job or step without `if:` uses."""
        return cls("success()")

    @property
    def uses_status_function(self) -> bool:
        inner = single_expression(self.source)
        return ex.uses_status_function(inner if inner is not None else self.source)

    def evaluate(
        self,
        *,
        success: bool,
        failure: bool,
        cancelled: bool,
        contexts: Mapping[str, Any] | None = None,
    ) -> bool:
        """Raises ExpressionError when the expression cannot be evaluated with `contexts`."""
        status = ex.Status(success=success, failure=failure, cancelled=cancelled)
        return ex.condition(self.source, contexts or {}, status=status)

    def __str__(self) -> str:
        return self.source


def condition_problems(text: str) -> list[tuple[int, str]]:
    """Problems in an `if:` text, as (offset in `text`, message); [] when it is valid."""
    if not text.strip():
        return [(0, "the expression is empty")]
    if "${{" in text:
        return ex.check(text)
    wrapped = "${{ " + text + " }}"  # a bare `if:` is one expression
    return [(max(offset - 4, 0), message) for offset, message in ex.check(wrapped)]


def parse_condition(text: str) -> Condition:
    """Parse an `if:` expression; raise ValueError naming the first problem."""
    problems = condition_problems(text)
    if problems:
        offset, message = problems[0]
        raise ValueError(f"invalid expression {text!r}: {message} (at position {offset + 1})")
    return Condition(text)
