"""The built-in functions. Names are case-insensitive; arity is checked when parsing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.workflow.expressions.errors import MAX_MEMORY_CHARS, ExpressionEvalError
from app.workflow.expressions.values import (
    coerce_string,
    equals,
    fold,
    from_json,
    is_array,
    is_primitive,
    to_json,
)

STATUS_FUNCTIONS = frozenset({"success", "failure", "always", "cancelled"})
_MAX_ARGS = 255  # GitHub's limit for variadic functions

# name → (fewest, most) arguments
ARITY: dict[str, tuple[int, int]] = {
    "contains": (2, 2),
    "startswith": (2, 2),
    "endswith": (2, 2),
    "format": (1, _MAX_ARGS),
    "join": (1, 2),
    "tojson": (1, 1),
    "fromjson": (1, 1),
    "hashfiles": (1, _MAX_ARGS),
    "case": (3, _MAX_ARGS),
    "success": (0, 0),
    "failure": (0, 0),
    "always": (0, 0),
    "cancelled": (0, 0),
}


@dataclass
class Status:
    """What the status functions report: the caller knows whether earlier work failed."""

    success: bool = True
    failure: bool = False
    cancelled: bool = False


@dataclass
class CallContext:
    status: Status
    hash_files: Callable[[list[str]], str] | None
    used_chars: int = field(default=0)

    def reserve(self, size: int) -> None:
        """Fail before building a string that would take the evaluation over its budget."""
        if self.used_chars + size > MAX_MEMORY_CHARS:
            raise ExpressionEvalError(
                f"The expression would produce more than {MAX_MEMORY_CHARS} characters of text"
            )

    def produced(self, text: str) -> str:
        """Account for a string a function built; fail once an evaluation has built too much."""
        self.reserve(len(text))
        self.used_chars += len(text)
        return text


def _contains(_ctx: CallContext, args: Sequence[Any]) -> bool:
    haystack, needle = args
    if is_primitive(haystack):
        return is_primitive(needle) and fold(coerce_string(needle)) in fold(coerce_string(haystack))
    if is_array(haystack):
        return any(equals(needle, item) for item in haystack)
    return False


def _starts_with(_ctx: CallContext, args: Sequence[Any]) -> bool:
    text, prefix = args
    if not (is_primitive(text) and is_primitive(prefix)):
        return False
    return fold(coerce_string(text)).startswith(fold(coerce_string(prefix)))


def _ends_with(_ctx: CallContext, args: Sequence[Any]) -> bool:
    text, suffix = args
    if not (is_primitive(text) and is_primitive(suffix)):
        return False
    return fold(coerce_string(text)).endswith(fold(coerce_string(suffix)))


def _format(ctx: CallContext, args: Sequence[Any]) -> str:
    template = coerce_string(args[0])
    values = args[1:]
    out: list[str] = []
    size = 0
    i, n = 0, len(template)
    while i < n:
        left = template.find("{", i)
        right = template.find("}", i)
        if left >= 0 and (right < 0 or left < right):
            if template.startswith("{{", left):
                out.append(template[i : left + 1])
                i = left + 2
                continue
            digits = left + 1
            while digits < n and template[digits].isdigit() and template[digits].isascii():
                digits += 1
            if digits == left + 1 or digits != right:
                raise ExpressionEvalError(f"The format string is invalid: {template}")
            number = int(template[left + 1 : right])
            if number >= len(values):
                raise ExpressionEvalError(
                    f"The format string references more arguments than were supplied: {template}"
                )
            piece = coerce_string(values[number])
            out.append(template[i:left])
            out.append(piece)
            size += right - i + len(piece)
            # Check as we go, so `format('{0}{0}...', huge)` stops before building it all.
            ctx.reserve(size)
            i = right + 1
        elif right >= 0:
            if not template.startswith("}}", right):
                raise ExpressionEvalError(f"The format string is invalid: {template}")
            out.append(template[i : right + 1])
            i = right + 2
        else:
            out.append(template[i:])
            break
    return ctx.produced("".join(out))


def _join(ctx: CallContext, args: Sequence[Any]) -> str:
    items = args[0]
    if is_primitive(items):
        return ctx.produced(coerce_string(items))
    if not is_array(items):
        return ""
    separator = ","
    if len(args) > 1 and is_primitive(args[1]):
        separator = coerce_string(args[1])
    size = 0
    parts: list[str] = []
    for item in items:
        part = coerce_string(item)
        size += len(part) + len(separator)
        ctx.reserve(size)
        parts.append(part)
    return ctx.produced(separator.join(parts))


def _to_json(ctx: CallContext, args: Sequence[Any]) -> str:
    return ctx.produced(to_json(args[0]))


def _from_json(_ctx: CallContext, args: Sequence[Any]) -> Any:
    return from_json(coerce_string(args[0]))


def _hash_files(ctx: CallContext, args: Sequence[Any]) -> str:
    if ctx.hash_files is None:
        raise ExpressionEvalError("hashFiles() is not available here: it works only in steps")
    return ctx.hash_files([coerce_string(arg) for arg in args])


def _status(name: str) -> Callable[[CallContext, Sequence[Any]], bool]:
    def call(ctx: CallContext, _args: Sequence[Any]) -> bool:
        if name == "always":
            return True
        return bool(getattr(ctx.status, name))

    return call


IMPLEMENTATIONS: dict[str, Callable[[CallContext, Sequence[Any]], Any]] = {
    "contains": _contains,
    "startswith": _starts_with,
    "endswith": _ends_with,
    "format": _format,
    "join": _join,
    "tojson": _to_json,
    "fromjson": _from_json,
    "hashfiles": _hash_files,
    **{name: _status(name) for name in STATUS_FUNCTIONS},
}
