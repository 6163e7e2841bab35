"""Loading a workflow's YAML with positions, and naming values in messages.

ruamel.yaml's round-trip loader keeps the line and column of every mapping key, value and sequence
item, which is what lets every problem name its position. The loader refuses what would make
ruamel slow or recursive (deep bracket nesting) before handing it the text.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator, Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.scalarbool import ScalarBoolean

from app.workflow.spec import Problem

Pos = tuple[int, int]  # 1-based (line, column)

MAX_BRACKET_DEPTH = 100
_BRACKET = re.compile(r"[\[\]{}]")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"


# --- loading -----------------------------------------------------------------------------------


class Problems:
    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, pos: Pos, message: str) -> None:
        self.items.append(Problem(pos[0], pos[1], message))


def load(text: str, problems: Problems) -> CommentedMap | None:
    """The document's top-level mapping, or None after recording why there is none."""
    too_deep = _too_deep(text)
    if too_deep is not None:
        problems.add(too_deep, f"invalid YAML: brackets nest more than {MAX_BRACKET_DEPTH} deep")
        return None
    try:
        root_node = YAML(typ="rt").compose(text)
    except YAMLError as exc:
        problems.add(_mark_pos(exc), f"invalid YAML: {_yaml_message(exc)}")
        return None
    except RecursionError:
        # ruamel's composer recurses once per nesting level
        problems.add((0, 0), "invalid YAML: the document is nested too deeply")
        return None
    if root_node is None or (isinstance(root_node, ScalarNode) and str(root_node.tag) == _NULL_TAG):
        problems.add((1, 1), "the workflow is empty")
        return None
    if not isinstance(root_node, MappingNode):
        pos = (root_node.start_mark.line + 1, root_node.start_mark.column + 1)
        problems.add(pos, "the workflow must be a mapping with a `jobs` key")
        return None
    for key_node in _duplicate_keys(root_node):
        mark = key_node.start_mark
        problems.add((mark.line + 1, mark.column + 1), f"duplicate key {key_node.value!r}")
    # Duplicates are already reported, with every one's position; loading with them allowed (the
    # first value wins) lets the rest of the document be checked too.
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = True
    try:
        data = yaml.load(text)
    except YAMLError as exc:
        problems.add(_mark_pos(exc), f"invalid YAML: {_yaml_message(exc)}")
        return None
    except RecursionError:
        problems.add((0, 0), "invalid YAML: the document is nested too deeply")
        return None
    except (ValueError, KeyError, TypeError) as exc:
        # ruamel raises these without a position for explicit tags it cannot apply (`!!int abc`).
        problems.add((0, 0), f"invalid YAML: cannot construct a value ({exc!r})")
        return None
    if not isinstance(data, CommentedMap):  # pragma: no cover - composed as a mapping above
        problems.add((1, 1), "the workflow must be a mapping with a `jobs` key")
        return None
    return data


def _too_deep(text: str) -> Pos | None:
    """Where brackets first nest deeper than MAX_BRACKET_DEPTH, if they do.

    Deliberately naive (brackets inside strings and scripts count too): real workflows nest a few
    levels, and anything this deep is rejected cheaply before ruamel, whose scanner slows down
    super-linearly with flow nesting (800 levels of `[` take seconds).
    """
    depth = 0
    for match in _BRACKET.finditer(text):
        if match.group() in "[{":
            depth += 1
            if depth > MAX_BRACKET_DEPTH:
                line = text.count("\n", 0, match.start()) + 1
                column = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
                return line, column
        else:
            depth = max(depth - 1, 0)
    return None


def _mark_pos(exc: YAMLError) -> Pos:
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            return mark.line + 1, mark.column + 1
    return 0, 0


def _yaml_message(exc: YAMLError) -> str:
    if isinstance(exc, MarkedYAMLError):
        parts = [part for part in (exc.context, exc.problem) if part]
        if parts:
            return ", ".join(str(part).strip() for part in parts)
    return str(exc).strip()


def _duplicate_keys(root: Node) -> Iterator[ScalarNode]:
    """Second and later occurrences of a scalar key in the same mapping, anywhere in the tree."""
    seen: set[int] = set()  # aliases share nodes, and may even point at an ancestor
    stack: list[Node] = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            keys: set[tuple[str, str]] = set()
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode) and str(key_node.tag) != _MERGE_TAG:
                    ident = (str(key_node.tag), str(key_node.value))
                    if ident in keys:
                        yield key_node
                    keys.add(ident)
                stack.extend((key_node, value_node))
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)


# --- positions and values ----------------------------------------------------------------------


def node_pos(node: CommentedMap | CommentedSeq) -> Pos:
    return node.lc.line + 1, node.lc.col + 1


def key_pos(mapping: CommentedMap, key: Any) -> Pos:
    try:
        line, col = mapping.lc.key(key)
    except KeyError:  # keys that came in through a `<<:` merge have no position of their own
        return node_pos(mapping)
    return line + 1, col + 1


def value_pos(mapping: CommentedMap, key: Any) -> Pos:
    # An empty value has no token: ruamel would report wherever the next token starts (often the
    # next key), so point at the key instead.
    if mapping.get(key) is None:
        return key_pos(mapping, key)
    try:
        line, col = mapping.lc.value(key)
    except KeyError:
        return node_pos(mapping)
    return line + 1, col + 1


def item_pos(seq: CommentedSeq, index: int) -> Pos:
    try:
        line, col = seq.lc.item(index)
    except KeyError:
        return node_pos(seq)
    return line + 1, col + 1


def describe(value: Any) -> str:
    """How a value is named in a message."""
    if value is None:
        return "nothing"
    if isinstance(value, bool | ScalarBoolean):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(str(value))
    if isinstance(value, int | float):
        return number_text(value)
    if isinstance(value, Mapping):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return f"a {type(value).__name__}"


def number_text(value: float) -> str:
    # Like JavaScript (and so GitHub): 3.0 becomes "3", 3.10 becomes "3.1".
    if isinstance(value, int):
        return str(int(value))
    number = float(value)
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    return repr(number)


def scalar_text(value: Any) -> str | None:
    """The string form of a scalar value (env and matrix values), None if it is not a scalar."""
    if value is None:
        return ""
    if isinstance(value, bool | ScalarBoolean):
        return "true" if value else "false"
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int | float):
        return number_text(value)
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return value.isoformat()
    return None


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool | ScalarBoolean)


def plain(value: Any) -> Any:
    """ruamel's round-trip values as plain JSON-like data (matrix values, tolerations)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if value is None:
        return None
    if isinstance(value, bool | ScalarBoolean):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    text = scalar_text(value)
    return text if text is not None else str(value)
