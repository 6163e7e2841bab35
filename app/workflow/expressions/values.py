"""Values and GitHub's coercion rules.

Values are JSON-like Python data: None, bool, int/float, str, lists and dicts (any Mapping or
list/tuple from a caller is read the same way). Equality and comparison follow GitHub: operands of
different kinds are converted to numbers (null → 0, booleans → 0/1, strings parsed, NaN when not
a number), strings compare case-insensitively, and arrays/objects are equal only to themselves.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from app.workflow.expressions.errors import MAX_VALUE_DEPTH, ExpressionEvalError
from app.workflow.expressions.lexer import parse_number


class Filtered(list[Any]):
    """The array an object filter (`a.*`) produces; indexing it indexes every element."""


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_array(value: Any) -> bool:
    return isinstance(value, list | tuple)


def is_object(value: Any) -> bool:
    return isinstance(value, Mapping)


def is_primitive(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def truthy(value: Any) -> bool:
    """GitHub's truthiness: false, 0, -0, NaN, '' and null are falsy; arrays and objects truthy."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return not (value == 0 or math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True


def to_number(value: Any) -> int | float:
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return parse_number(value)
    return math.nan


def format_number(value: int | float) -> str:
    """A number as GitHub prints it: .NET's "G15" (15 significant digits, no trailing zeros,
    exponent form below 1e-4 or from 1e15), `Infinity`, `-Infinity`, `NaN`; -0 prints as 0."""
    if isinstance(value, int) and abs(value) < 10**15:
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    return format(float(value), ".15g").replace("e", "E")


def coerce_string(value: Any) -> str:
    """GitHub's string conversion inside functions: arrays and objects become 'Array'/'Object'."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return format_number(value)
    if isinstance(value, str):
        return value
    return "Array" if is_array(value) else "Object"


def to_string(value: Any) -> str:
    """A value as it is spliced into text: null → '', arrays and objects as pretty JSON."""
    if is_array(value) or is_object(value):
        return to_json(value)
    return coerce_string(value)


_DOTLESS_I = "\u0131"


def fold(text: str) -> str:
    """Upper-case `text` the way .NET's OrdinalIgnoreCase compares: one character for one
    character (so 'ß' stays itself) and the dotless i (U+0131) is not folded onto 'I'."""
    if text.isascii():
        return text.upper()
    out = []
    for char in text:
        upper = char.upper()
        out.append(upper if len(upper) == 1 and char != _DOTLESS_I else char)
    return "".join(out)


def lookup(obj: Mapping[Any, Any], key: str) -> Any:
    """`obj[key]` with GitHub's case-insensitive property names; None when absent."""
    if key in obj:
        return obj[key]
    folded = fold(key)
    for name, value in obj.items():
        if isinstance(name, str) and fold(name) == folded:
            return value
    return None


def _coerce_pair(left: Any, right: Any) -> tuple[Any, Any]:
    """Bring two operands to one kind the way GitHub's `==` and `<` do, where possible."""
    for _ in range(2):
        if _kind(left) == _kind(right):
            return left, right
        if left is None or isinstance(left, bool):
            left = to_number(left)
        elif (
            right is None or isinstance(right, bool) or (is_number(left) and isinstance(right, str))
        ):
            right = to_number(right)
        elif isinstance(left, str) and is_number(right):
            left = to_number(left)
        else:
            return left, right
    return left, right


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if is_array(value) else "object"


def equals(left: Any, right: Any) -> bool:
    left, right = _coerce_pair(left, right)
    kind = _kind(left)
    if kind != _kind(right):
        return False
    if kind == "string":
        return bool(fold(left) == fold(right))
    if kind in ("array", "object"):
        return left is right
    return bool(left == right)  # NaN never equals anything, as in IEEE arithmetic


def less_than(left: Any, right: Any) -> bool:
    left, right = _coerce_pair(left, right)
    kind = _kind(left)
    if kind != _kind(right) or kind in ("array", "object", "null"):
        return False
    if kind == "string":
        return bool(fold(left) < fold(right))
    return bool(left < right)


def greater_than(left: Any, right: Any) -> bool:
    left, right = _coerce_pair(left, right)
    kind = _kind(left)
    if kind != _kind(right) or kind in ("array", "object", "null"):
        return False
    if kind == "string":
        return bool(fold(left) > fold(right))
    return bool(left > right)


def to_json(value: Any) -> str:
    """`toJSON`: pretty JSON with a 2-space indent, numbers formatted as GitHub does."""
    out: list[str] = []
    _write_json(value, out, 0)
    return "".join(out)


def _write_json(value: Any, out: list[str], depth: int) -> None:
    if depth > MAX_VALUE_DEPTH:
        raise ExpressionEvalError(f"toJSON: value nested deeper than {MAX_VALUE_DEPTH} levels")
    pad = "\n" + "  " * (depth + 1)
    if is_object(value):
        if not value:
            out.append("{}")
            return
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            out.append(("," if i else "") + pad + json.dumps(str(key), ensure_ascii=False) + ": ")
            _write_json(item, out, depth + 1)
        out.append("\n" + "  " * depth + "}")
    elif is_array(value):
        if not value:
            out.append("[]")
            return
        out.append("[")
        for i, item in enumerate(value):
            out.append(("," if i else "") + pad)
            _write_json(item, out, depth + 1)
        out.append("\n" + "  " * depth + "]")
    elif value is None:
        out.append("null")
    elif isinstance(value, bool | int | float):
        out.append(coerce_string(value))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    else:
        # A caller passed something that is not JSON-like; show it rather than fail.
        out.append(json.dumps(str(value), ensure_ascii=False))


def from_json(text: str) -> Any:
    """`fromJSON`: parse JSON text; integral numbers come back as int."""
    if not text.strip():
        raise ExpressionEvalError("fromJSON: the input is empty")
    try:
        return json.loads(text, parse_float=_json_float, parse_constant=_json_constant)
    except RecursionError:
        raise ExpressionEvalError("fromJSON: the input is nested too deeply") from None
    except ValueError as exc:
        raise ExpressionEvalError(f"fromJSON: invalid JSON: {exc}") from None


def _json_float(text: str) -> int | float:
    value = float(text)
    if value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _json_constant(name: str) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


def plain(value: Any) -> Any:
    """Strip our internal Filtered marker from a result handed back to a caller."""
    return list(value) if isinstance(value, Filtered) else value
