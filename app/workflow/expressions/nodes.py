"""The syntax tree of an expression. Every node records its 0-based offset in the expression."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Literal:
    value: bool | int | float | str | None
    offset: int


@dataclass(frozen=True, slots=True)
class Context:
    """A top-level name such as `github`; matched case-insensitively."""

    name: str
    offset: int


@dataclass(frozen=True, slots=True)
class Star:
    """The `*` of `a.*` or `a[*]`: every element (an object filter)."""

    offset: int


@dataclass(frozen=True, slots=True)
class Index:
    target: Node
    index: Node | Star
    offset: int


@dataclass(frozen=True, slots=True)
class Call:
    name: str  # lower-cased
    args: tuple[Node, ...]
    offset: int
    written: str  # the name as written, for messages


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node
    offset: int


@dataclass(frozen=True, slots=True)
class Compare:
    op: str  # one of == != < <= > >=
    left: Node
    right: Node
    offset: int


@dataclass(frozen=True, slots=True)
class Logical:
    """`a && b && c` or `a || b || c`: short-circuits and returns an operand, not a boolean."""

    op: str  # "&&" or "||"
    operands: tuple[Node, ...]
    offset: int


@dataclass(frozen=True, slots=True)
class Group:
    """Parentheses; kept because only groups, calls and contexts may be indexed."""

    inner: Node
    offset: int


Node = Literal | Context | Index | Call | Not | Compare | Logical | Group


def walk(node: Node | Star) -> list[Node]:
    """Every node of the tree, parents before children (iterative: trees are at most 50 deep,
    but iteration costs nothing and cannot hit the recursion limit)."""
    out: list[Node] = []
    stack: list[Node | Star] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Star):
            continue
        out.append(current)
        match current:
            case Index(target=t, index=i):
                stack.extend((i, t))
            case Call(args=args):
                stack.extend(reversed(args))
            case Not(operand=o):
                stack.append(o)
            case Compare(left=left, right=right):
                stack.extend((right, left))
            case Logical(operands=ops):
                stack.extend(reversed(ops))
            case Group(inner=inner):
                stack.append(inner)
    return out
