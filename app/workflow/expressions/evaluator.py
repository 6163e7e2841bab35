"""Evaluates a syntax tree against contexts (plain, JSON-like data supplied by the caller)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from app.workflow.expressions.errors import ExpressionEvalError
from app.workflow.expressions.functions import IMPLEMENTATIONS, CallContext
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
from app.workflow.expressions.values import (
    Filtered,
    coerce_string,
    equals,
    fold,
    greater_than,
    is_array,
    is_object,
    is_primitive,
    less_than,
    lookup,
    to_number,
    truthy,
)

# The contexts GitHub defines. One the caller did not supply reads as an empty object rather than
# failing (a job without a matrix still may say `matrix.os`, which is null there, as on GitHub).
KNOWN_CONTEXTS = frozenset(
    {
        "github",
        "env",
        "vars",
        "secrets",
        "inputs",
        "matrix",
        "strategy",
        "needs",
        "steps",
        "job",
        "jobs",
        "runner",
    }
)


class Evaluator:
    def __init__(self, contexts: Mapping[str, Any], call_context: CallContext) -> None:
        self.contexts = contexts
        self.calls = call_context

    def eval(self, node: Node) -> Any:
        match node:
            case Literal(value=value):
                return value
            case Context(name=name):
                return self.context(name)
            case Group(inner=inner):
                return self.eval(inner)
            case Not(operand=operand):
                return not truthy(self.eval(operand))
            case Logical(op=op, operands=operands):
                result: Any = None
                for operand in operands:
                    result = self.eval(operand)
                    if truthy(result) == (op == "||"):
                        break
                return result
            case Compare(op=op, left=left, right=right):
                return _compare(op, self.eval(left), self.eval(right))
            case Index(target=target, index=index):
                return self.index(target, index)
            case Call():
                return self.call(node)
        raise ExpressionEvalError(f"cannot evaluate {type(node).__name__}")  # pragma: no cover

    def context(self, name: str) -> Any:
        if name in self.contexts:
            return self.contexts[name]
        folded = fold(name)
        for key, value in self.contexts.items():
            if fold(key) == folded:
                return value
        if name.lower() in KNOWN_CONTEXTS:
            return {}
        raise ExpressionEvalError(f"Unrecognized named-value: '{name}'")

    def index(self, target_node: Node, index_node: Node | Star) -> Any:
        key: Any = None
        star = isinstance(index_node, Star)
        if not isinstance(index_node, Star):
            key = self.eval(index_node)
        target = self.eval(target_node)
        if isinstance(target, Filtered):
            # An object filter applies the next step to every element and keeps what exists.
            out = Filtered()
            for item in target:
                if star:
                    out.extend(_all_items(item))
                elif is_object(item):
                    name = _as_name(key)
                    if name is not None and _has(item, name):
                        out.append(lookup(item, name))
                elif is_array(item):
                    position = _as_position(key)
                    if position is not None and position < len(item):
                        out.append(item[position])
            return out
        if star:
            return Filtered(_all_items(target))
        if is_object(target):
            name = _as_name(key)
            return None if name is None else lookup(target, name)
        if is_array(target):
            position = _as_position(key)
            return target[position] if position is not None and position < len(target) else None
        return None

    def call(self, node: Call) -> Any:
        if node.name == "case":
            return self.case(node)
        args = [self.eval(arg) for arg in node.args]
        return IMPLEMENTATIONS[node.name](self.calls, args)

    def case(self, node: Call) -> Any:
        """`case(pred1, value1, ..., default)`: the value of the first true predicate."""
        args = node.args
        for i in range(0, len(args) - 1, 2):
            predicate = self.eval(args[i])
            if not isinstance(predicate, bool):
                raise ExpressionEvalError("case(): a predicate must evaluate to a boolean")
            if predicate:
                return self.eval(args[i + 1])
        return self.eval(args[-1])


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "==":
        return equals(left, right)
    if op == "!=":
        return not equals(left, right)
    if op == "<":
        return less_than(left, right)
    if op == ">":
        return greater_than(left, right)
    if op == "<=":
        return equals(left, right) or less_than(left, right)
    return equals(left, right) or greater_than(left, right)


def _all_items(value: Any) -> list[Any]:
    if is_object(value):
        return list(value.values())
    if is_array(value):
        return list(value)
    return []


def _as_name(key: Any) -> str | None:
    return coerce_string(key) if is_primitive(key) else None


def _has(obj: Mapping[Any, Any], name: str) -> bool:
    if name in obj:
        return True
    folded = fold(name)
    return any(isinstance(k, str) and fold(k) == folded for k in obj)


def _as_position(key: Any) -> int | None:
    number = to_number(key)
    if math.isnan(number) or math.isinf(number) or number < 0:
        return None
    return int(number)
