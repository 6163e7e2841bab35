"""Strings that contain `${{ }}`: splitting them and checking every expression in them."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from app.workflow.expressions.errors import ExpressionSyntaxError
from app.workflow.expressions.functions import STATUS_FUNCTIONS
from app.workflow.expressions.lexer import Kind, tokenize
from app.workflow.expressions.nodes import Call, Context, walk
from app.workflow.expressions.parser import parse

OPEN = "${{"
CLOSE = "}}"


@dataclass(frozen=True)
class Segment:
    """A piece of a template: literal text, or the text of one expression.

    `offset` is where the piece starts in the template; for an expression that is the first
    character after `${{`, so an offset inside the expression plus `offset` is an offset in the
    template.
    """

    literal: str | None
    expression: str | None
    offset: int


def split_template(text: str) -> list[Segment]:
    """`"a ${{ x }} b"` → literal "a ", expression " x ", literal " b".

    The closing `}}` is looked for outside single-quoted strings, as GitHub does, so
    `${{ format('{{0}}', x) }}` is one expression. Raises ExpressionSyntaxError (offset of the
    `${{`) when an expression is not closed.
    """
    segments: list[Segment] = []
    i = 0
    while True:
        start = text.find(OPEN, i)
        if start < 0:
            if i < len(text):
                segments.append(Segment(text[i:], None, i))
            return segments
        if start > i:
            segments.append(Segment(text[i:start], None, i))
        inner = start + len(OPEN)
        end = _closing(text, inner)
        if end < 0:
            raise ExpressionSyntaxError(
                "The expression is not closed: '${{' was found without a matching '}}'", start
            )
        segments.append(Segment(None, text[inner:end], inner))
        i = end + len(CLOSE)


def _closing(text: str, i: int) -> int:
    in_string = False
    n = len(text)
    while i < n:
        char = text[i]
        if char == "'":
            # A doubled quote inside a string toggles twice: it stays a string.
            in_string = not in_string
        elif not in_string and char == "}" and text.startswith(CLOSE, i):
            return i
        i += 1
    return -1


def single_expression(text: str) -> str | None:
    """The expression when `text` is exactly one `${{ }}` (whitespace around it allowed)."""
    stripped = text.strip()
    if not (stripped.startswith(OPEN) and stripped.endswith(CLOSE)):
        return None
    try:
        segments = split_template(text)
    except ExpressionSyntaxError:
        return None
    expressions = [s.expression for s in segments if s.expression is not None]
    literals = [s.literal for s in segments if s.literal is not None]
    if len(expressions) != 1 or any(lit.strip() for lit in literals):
        return None
    return expressions[0]


def check(
    text: str,
    *,
    allowed_contexts: Collection[str] | None = None,
    allow_status_functions: bool = True,
    allow_hash_files: bool = True,
) -> list[tuple[int, str]]:
    """Every problem in a string that may contain `${{ }}`, as (offset in `text`, message).

    Syntax errors, unknown functions and wrong argument counts always; context names not in
    `allowed_contexts` when it is given (GitHub allows different contexts under different keys);
    status functions and hashFiles where the caller says they are not available.
    """
    try:
        segments = split_template(text)
    except ExpressionSyntaxError as exc:
        return [(exc.offset, exc.message)]
    problems: list[tuple[int, str]] = []
    for segment in segments:
        if segment.expression is None:
            continue
        problems.extend(
            (segment.offset + offset, message)
            for offset, message in check_expression(
                segment.expression,
                allowed_contexts=allowed_contexts,
                allow_status_functions=allow_status_functions,
                allow_hash_files=allow_hash_files,
                template=True,
            )
        )
    return problems


def check_expression(
    expression: str,
    *,
    allowed_contexts: Collection[str] | None = None,
    allow_status_functions: bool = True,
    allow_hash_files: bool = True,
    template: bool = False,
) -> list[tuple[int, str]]:
    """The problems of one bare expression, offsets relative to it."""
    if template and not expression.strip():
        return [(0, "An expression was expected inside '${{ }}'")]
    allowed = None if allowed_contexts is None else {name.lower() for name in allowed_contexts}
    try:
        tree = parse(expression)
    except ExpressionSyntaxError as exc:
        # GitHub's parser names an unknown context as soon as it reads it, so a bad argument
        # count or a later syntax error comes second; we list the names first too.
        names = _context_names(expression) if allowed is not None else []
        found = [_unknown(name, offset, allowed) for name, offset in names]
        return [p for p in found if p is not None] + [(exc.offset, exc.message)]
    problems: list[tuple[int, str]] = []
    for node in walk(tree):
        if isinstance(node, Context):
            problem = _unknown(node.name, node.offset, allowed)
            if problem is not None:
                problems.append(problem)
        elif isinstance(node, Call):
            if node.name in STATUS_FUNCTIONS and not allow_status_functions:
                problems.append(
                    (node.offset, f"The status function '{node.written}()' is not allowed here")
                )
            elif node.name == "hashfiles" and not allow_hash_files:
                problems.append((node.offset, "hashFiles() is not allowed here"))
    return problems


def _unknown(name: str, offset: int, allowed: set[str] | None) -> tuple[int, str] | None:
    if allowed is None or name.lower() in allowed:
        return None
    available = ", ".join(sorted(allowed)) or "none"
    return (offset, f"Unrecognized named-value: '{name}' (available here: {available})")


def _context_names(expression: str) -> list[tuple[str, int]]:
    """Context names (a word not after '.' and not before '(') in a text that does not parse."""
    try:
        tokens = tokenize(expression)
    except ExpressionSyntaxError:
        return []
    names = []
    for i, token in enumerate(tokens):
        if (
            token.kind is Kind.IDENT
            and (i == 0 or tokens[i - 1].kind is not Kind.DOT)
            and tokens[i + 1].kind is not Kind.LPAREN
        ):
            names.append((token.text, token.offset))
    return names


def uses_status_function(expression: str) -> bool:
    """Whether the expression calls success(), failure(), always() or cancelled().

    Accepts a bare expression or one wrapped in `${{ }}`; a text that does not parse answers
    False (the syntax error is reported where the text is checked).
    """
    inner = single_expression(expression)
    try:
        tree = parse(expression if inner is None else inner)
    except ExpressionSyntaxError:
        return False
    return any(isinstance(node, Call) and node.name in STATUS_FUNCTIONS for node in walk(tree))
