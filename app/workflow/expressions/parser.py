"""Recursive-descent parser for GitHub's expression grammar.

Precedence, loosest first: `||`, `&&`, `==` `!=`, `<` `<=` `>` `>=`, `!`, then property access,
index and call. Nesting is counted the way GitHub counts it (each sub-expression, each `!`, each
`&&`/`||` chain and each property or index step is one level) and refused past MAX_DEPTH, which
also bounds our recursion.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from app.workflow.expressions.errors import MAX_DEPTH, ExpressionSyntaxError
from app.workflow.expressions.functions import ARITY
from app.workflow.expressions.lexer import Kind, Token, tokenize
from app.workflow.expressions.nodes import (
    Call,
    Compare,
    Context,
    Group,
    Index,
    Literal,
    Logical,
    Node,
    Not,
    Star,
)

_COMPARISONS = (Kind.LT, Kind.LE, Kind.GT, Kind.GE)
_EQUALITIES = (Kind.EQ, Kind.NE)


# Only short texts are cached: real conditions are short, and a cap on both the entry count and
# the text length bounds what a stream of distinct hostile expressions can pin in memory.
_CACHED_LENGTH = 2_048


def parse(expression: str) -> Node:
    """The syntax tree of a bare expression (the text inside `${{ }}`).

    An empty expression is `null`, as on GitHub. Raises ExpressionSyntaxError with the 0-based
    offset of the problem. Cached by text: the same `if:` is evaluated once per matrix leg.
    """
    if len(expression) > _CACHED_LENGTH:
        return _parse(expression)
    return _parse_cached(expression)


@lru_cache(maxsize=4096)
def _parse_cached(expression: str) -> Node:
    return _parse(expression)


def _parse(expression: str) -> Node:
    return _Parser(tokenize(expression)).parse()


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    # -- helpers ---------------------------------------------------------------------------------
    def peek(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        if token.kind is not Kind.EOF:
            self.pos += 1
        return token

    def accept(self, *kinds: Kind) -> Token | None:
        if self.peek().kind in kinds:
            return self.advance()
        return None

    def unexpected(self, token: Token) -> ExpressionSyntaxError:
        if token.kind is Kind.EOF:
            # Point at the last token, as GitHub does: that is what is left unfinished.
            if not self.pos:
                return ExpressionSyntaxError("Unexpected end of expression", token.offset)
            last = self.tokens[self.pos - 1]
            return ExpressionSyntaxError(
                f"Unexpected end of expression after '{last.text}'", last.offset
            )
        return ExpressionSyntaxError(f"Unexpected symbol: '{token.text}'", token.offset)

    def expect(self, kind: Kind) -> Token:
        token = self.accept(kind)
        if token is None:
            raise self.unexpected(self.peek())
        return token

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionSyntaxError(
                f"Exceeded max expression depth {MAX_DEPTH}", self.peek().offset
            )

    # -- grammar ---------------------------------------------------------------------------------
    def parse(self) -> Node:
        if self.peek().kind is Kind.EOF:
            return Literal(None, 0)
        node = self.expression()
        if self.peek().kind is not Kind.EOF:
            raise self.unexpected(self.peek())
        return node

    def expression(self) -> Node:
        self.enter()
        try:
            return self.logical(Kind.OR)
        finally:
            self.depth -= 1

    def logical(self, kind: Kind) -> Node:
        operand = self.logical_and if kind is Kind.OR else self.equality
        first = operand()
        if self.peek().kind is not kind:
            return first
        self.enter()
        try:
            operator = self.peek()
            operands = [first]
            while self.accept(kind):
                operands.append(operand())
            return Logical(operator.text, tuple(operands), first_offset(first))
        finally:
            self.depth -= 1

    def logical_and(self) -> Node:
        return self.logical(Kind.AND)

    def equality(self) -> Node:
        return self.binary(_EQUALITIES, self.comparison)

    def comparison(self) -> Node:
        return self.binary(_COMPARISONS, self.unary)

    def binary(self, kinds: tuple[Kind, ...], operand: Callable[[], Node]) -> Node:
        # `a == b == c` nests to the left; GitHub does not count these levels, we do, because
        # a chain of thousands would otherwise nest the evaluation thousands deep.
        node = operand()
        entered = 0
        try:
            while (op := self.accept(*kinds)) is not None:
                self.enter()
                entered += 1
                node = Compare(op.text, node, operand(), op.offset)
            return node
        finally:
            self.depth -= entered

    def unary(self) -> Node:
        bang = self.accept(Kind.NOT)
        if bang is None:
            return self.postfix()
        self.enter()
        try:
            return Not(self.unary(), bang.offset)
        finally:
            self.depth -= 1

    def postfix(self) -> Node:
        node = self.primary()
        if not isinstance(node, Group | Call | Context):
            return node
        entered = 0
        try:
            while True:
                if (bracket := self.accept(Kind.LBRACKET)) is not None:
                    star = self.accept(Kind.STAR)
                    index: Node | Star = Star(star.offset) if star else self.expression()
                    self.expect(Kind.RBRACKET)
                    self.enter()
                    entered += 1
                    node = Index(node, index, bracket.offset)
                elif (dot := self.accept(Kind.DOT)) is not None:
                    self.enter()
                    entered += 1
                    token = self.peek()
                    if token.kind is Kind.IDENT:
                        self.advance()
                        node = Index(node, Literal(token.text, token.offset), dot.offset)
                    elif token.kind is Kind.STAR:
                        self.advance()
                        node = Index(node, Star(token.offset), dot.offset)
                    else:
                        raise self.unexpected(token)
                else:
                    return node
        finally:
            self.depth -= entered

    def primary(self) -> Node:
        token = self.advance()
        match token.kind:
            case Kind.TRUE:
                return Literal(True, token.offset)
            case Kind.FALSE:
                return Literal(False, token.offset)
            case Kind.NULL:
                return Literal(None, token.offset)
            case Kind.NUMBER | Kind.STRING:
                assert isinstance(token.value, int | float | str)
                return Literal(token.value, token.offset)
            case Kind.LPAREN:
                inner = self.expression()
                self.expect(Kind.RPAREN)
                return Group(inner, token.offset)
            case Kind.IDENT:
                if self.accept(Kind.LPAREN) is None:
                    return Context(token.text, token.offset)
                return self.call(token)
        # Report the token we could not use, not the one after it.
        self.pos -= 0 if token.kind is Kind.EOF else 1
        raise self.unexpected(self.peek())

    def call(self, name: Token) -> Call:
        args: list[Node] = []
        if self.accept(Kind.RPAREN) is None:
            while True:
                args.append(self.expression())
                if self.accept(Kind.RPAREN) is not None:
                    break
                self.expect(Kind.COMMA)
        key = name.text.lower()
        arity = ARITY.get(key)
        if arity is None:
            raise ExpressionSyntaxError(f"Unrecognized function: '{name.text}'", name.offset)
        low, high = arity
        if len(args) < low:
            raise ExpressionSyntaxError(
                f"Too few parameters supplied: '{name.text}' takes at least {low}", name.offset
            )
        if len(args) > high:
            raise ExpressionSyntaxError(
                f"Too many parameters supplied: '{name.text}' takes at most {high}", name.offset
            )
        if key == "case" and len(args) % 2 == 0:
            raise ExpressionSyntaxError(
                "case() takes an odd number of parameters (pairs of predicate and value, "
                "then a default)",
                name.offset,
            )
        return Call(key, tuple(args), name.offset, name.text)


def first_offset(node: Node) -> int:
    """Where the text of `node` starts (a binary node's own offset is its operator's)."""
    while isinstance(node, Compare | Index):
        node = node.left if isinstance(node, Compare) else node.target
    return node.offset
