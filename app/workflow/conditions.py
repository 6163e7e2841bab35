"""`if:` expressions: the status-function subset of GitHub's expression language.

Grammar (``!`` binds tightest, then ``&&``, then ``||``)::

    expression := or
    or         := and ("||" and)*
    and        := unary ("&&" unary)*
    unary      := "!" unary | primary
    primary    := "(" or ")" | status "(" ")"
    status     := "success" | "failure" | "always" | "cancelled"

The whole text may be wrapped in ``${{ ... }}``, as GitHub allows. Contexts (``github.ref``),
literals and other functions are rejected rather than guessed at: a condition that silently
evaluated to something other than what the author meant would run or skip jobs unexpectedly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

StatusName = Literal["success", "failure", "always", "cancelled"]
_STATUS_NAMES: tuple[StatusName, ...] = ("success", "failure", "always", "cancelled")
_SUPPORTED = "supported: success(), failure(), always(), cancelled(), !, &&, || and parentheses"

# Identifiers may contain dots and dashes so that `github.ref` or `steps.x-y` come out as one token
# and the error message can quote them whole.
# Anything else becomes a one-character token, so the parser (not the tokenizer) reports the
# first thing it cannot use.
_TOKEN = re.compile(
    r"\s*(?:(?P<op>&&|\|\||[!()])|(?P<ident>[A-Za-z_][A-Za-z0-9_.\-]*)|(?P<other>\S))"
)
_WRAPPER = re.compile(r"^\s*\$\{\{(?P<inner>.*)\}\}\s*$", re.DOTALL)


@dataclass(frozen=True)
class _Status:
    name: StatusName


@dataclass(frozen=True)
class _Not:
    operand: _Node


@dataclass(frozen=True)
class _And:
    left: _Node
    right: _Node


@dataclass(frozen=True)
class _Or:
    left: _Node
    right: _Node


_Node = _Status | _Not | _And | _Or


@dataclass(frozen=True)
class Condition:
    """A parsed `if:` expression; build one with `parse_condition` or `Condition.default()`."""

    source: str  # the expression text as written
    _node: _Node = field(repr=False, compare=False)

    @classmethod
    def default(cls) -> Condition:
        """`success()`: what a job or step without `if:` uses."""
        return cls("success()", _Status("success"))

    def evaluate(self, *, success: bool, failure: bool, cancelled: bool) -> bool:
        values: dict[StatusName, bool] = {
            "success": success,
            "failure": failure,
            "cancelled": cancelled,
            "always": True,
        }
        return _evaluate(self._node, values)

    def __str__(self) -> str:
        return self.source


def _evaluate(node: _Node, values: dict[StatusName, bool]) -> bool:
    match node:
        case _Status(name):
            return values[name]
        case _Not(operand):
            return not _evaluate(operand, values)
        case _And(left, right):
            return _evaluate(left, values) and _evaluate(right, values)
        case _Or(left, right):
            return _evaluate(left, values) or _evaluate(right, values)
    raise AssertionError(f"unreachable: {node!r}")  # pragma: no cover


class _SyntaxError(Exception):
    pass


@dataclass
class _Parser:
    tokens: list[tuple[str, int]]  # (token text, 1-based position in the whole text)
    pos: int = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        if self.pos >= len(self.tokens):
            want = f"expected '{expected}'" if expected else "expected an expression"
            raise _SyntaxError(f"{want} at the end")
        text, at = self.tokens[self.pos]
        if expected is not None and text != expected:
            raise _SyntaxError(f"expected '{expected}' but found '{text}' at position {at}")
        self.pos += 1
        return text

    def unexpected(self) -> _SyntaxError:
        text, at = self.tokens[self.pos]
        return _SyntaxError(f"unexpected '{text}' at position {at}")

    def parse(self) -> _Node:
        node = self.parse_or()
        if self.pos < len(self.tokens):
            raise self.unexpected()
        return node

    def parse_or(self) -> _Node:
        node = self.parse_and()
        while self.peek() == "||":
            self.take()
            node = _Or(node, self.parse_and())
        return node

    def parse_and(self) -> _Node:
        node = self.parse_unary()
        while self.peek() == "&&":
            self.take()
            node = _And(node, self.parse_unary())
        return node

    def parse_unary(self) -> _Node:
        if self.peek() == "!":
            self.take()
            return _Not(self.parse_unary())
        return self.parse_primary()

    def parse_primary(self) -> _Node:
        token = self.peek()
        if token is None:
            raise _SyntaxError("expected an expression at the end")
        if token == "(":
            self.take()
            node = self.parse_or()
            self.take(")")
            return node
        for name in _STATUS_NAMES:
            if token == name:
                self.take()
                self.take("(")
                self.take(")")
                return _Status(name)
        raise self.unexpected()


def _tokenize(text: str, start: int, stop: int) -> list[tuple[str, int]]:
    """Tokens of text[start:stop]; positions count from the start of the whole text."""
    tokens: list[tuple[str, int]] = []
    pos = start
    while text[pos:stop].strip():
        match = _TOKEN.match(text, pos, stop)
        assert match is not None  # `other` matches any non-space character
        kind = next(k for k in ("op", "ident", "other") if match.group(k) is not None)
        tokens.append((match.group(kind), match.start(kind) + 1))
        pos = match.end()
    return tokens


def parse_condition(text: str) -> Condition:
    """Parse an `if:` expression; raise ValueError("unsupported expression: ...") naming it."""
    wrapped = _WRAPPER.match(text)
    start, stop = wrapped.span("inner") if wrapped else (0, len(text))
    try:
        if "${{" in text[start:stop] or "}}" in text[start:stop]:
            raise _SyntaxError("`${{ }}` must wrap the whole expression")
        tokens = _tokenize(text, start, stop)
        if not tokens:
            raise _SyntaxError("the expression is empty")
        node = _Parser(tokens).parse()
    except _SyntaxError as exc:
        raise ValueError(f"unsupported expression: {text!r} ({exc}; {_SUPPORTED})") from None
    return Condition(text, node)
