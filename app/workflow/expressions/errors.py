"""Exceptions raised by the expression engine, and the limits that guard it."""

from __future__ import annotations

# GitHub's own limits (actions/runner ExpressionConstants): an expression longer than this, or
# nested deeper, is refused before evaluation, so hostile input cannot exhaust the stack.
MAX_EXPRESSION_LENGTH = 21_000
MAX_DEPTH = 50
# Characters all functions together may produce while evaluating one expression. GitHub caps an
# evaluation's memory too (about 1 MB); ours is a little larger so that `toJSON(github)` of a big
# event payload still fits, while `format()` doubling a string fifty times fails fast.
MAX_MEMORY_CHARS = 4 * 1024 * 1024
# Nesting accepted in values we serialise or parse (toJSON/fromJSON); deeper data is refused
# rather than hitting Python's recursion limit.
MAX_VALUE_DEPTH = 200


class ExpressionError(ValueError):
    """Any problem with an expression: its syntax or its evaluation."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ExpressionSyntaxError(ExpressionError):
    """The text is not a valid expression; `offset` is 0-based in the text that was given."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset

    def shifted(self, by: int) -> ExpressionSyntaxError:
        """The same error with its offset moved by `by` (an expression inside a larger text)."""
        return ExpressionSyntaxError(self.message, self.offset + by)


class ExpressionEvalError(ExpressionError):
    """A valid expression failed while being evaluated (bad JSON, bad format string, ...)."""
