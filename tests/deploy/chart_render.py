"""A small renderer for this repo's Helm chart, for machines without a `helm` binary.

It implements the part of Go text/template + Sprig + Helm that charts/ci-executor uses, and
refuses everything else loudly (an unknown function, keyword or syntax raises TemplateError) so
that a template change it cannot follow fails the tests instead of rendering something wrong.
When `helm` is present, tests/deploy/test_chart.py checks that this renderer's output equals
`helm template` for several value sets, which is what keeps it honest.

Supported:
- actions `{{ }}` with trim markers `{{-` / `-}}` and comments `{{/* */}}`;
- `define`, `include`, `if` / `else if` / `else`, `range` (lists and maps, with `$k, $v :=`),
  `with` / `else`, `$var :=` and `$var =`, parentheses, pipelines;
- fields `.A.B`, `$`, `$var.A`, string / number / bool / nil literals;
- functions: default, quote, toYaml, nindent, indent, trunc, trimSuffix, printf, replace,
  contains, splitList, has, list, fail, required, b64enc, sha256sum, not, eq, ne, and, or, empty.
Values are merged like Helm (maps deep-merged, null deletes a key), and numbers print the way Helm
prints its float64 values (7 digits or more use exponent notation, as `helm template` does).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml


class TemplateError(Exception):
    """A template could not be rendered (syntax we do not support, `fail`, `required`)."""


# ----------------------------------------------------------------------------------------------
# Lexing: split a template into text and actions, applying the trim markers.

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)


@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    source: str  # the action without delimiters and trim markers
    where: str


def _lex(source: str, name: str) -> list[_Text | _Action]:
    items: list[_Text | _Action] = []
    pos = 0
    trim_next = False
    for match in _ACTION.finditer(source):
        text = source[pos : match.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if match.group(1):
            text = text.rstrip(" \t\r\n")
        if text:
            items.append(_Text(text))
        body = match.group(2).strip()
        line = source.count("\n", 0, match.start()) + 1
        if not (body.startswith("/*") and body.endswith("*/")):
            items.append(_Action(body, f"{name}:{line}"))
        trim_next = bool(match.group(3))
        pos = match.end()
    text = source[pos:]
    if trim_next:
        text = text.lstrip(" \t\r\n")
    if text:
        items.append(_Text(text))
    return items


# ----------------------------------------------------------------------------------------------
# Expressions.

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<field>\.(?:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)?)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)


@dataclass
class _Tok:
    kind: str
    value: str


def _tokens(source: str, where: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise TemplateError(f"{where}: cannot parse {source[pos:]!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "ws":
            out.append(_Tok(kind, match.group()))
        pos = match.end()
    return out


@dataclass
class _Operand:
    kind: str  # literal | field | var | pipeline
    value: Any


@dataclass
class _Command:
    function: str | None  # None: a single operand, not a call
    args: list[_Operand]


@dataclass
class _Pipeline:
    commands: list[_Command]
    declare: list[str] = field(default_factory=list)  # $names bound with := (or = when assign)
    assign: bool = False


class _ExprParser:
    def __init__(self, tokens: list[_Tok], where: str) -> None:
        self.toks = tokens
        self.pos = 0
        self.where = where

    def peek(self) -> _Tok | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise TemplateError(f"{self.where}: unexpected end of action")
        self.pos += 1
        return tok

    def pipeline(self, allow_decl: bool = True) -> _Pipeline:
        declare: list[str] = []
        assign = False
        if allow_decl:
            # `$a :=`, `$a, $b :=` or `$a =`
            save = self.pos
            names: list[str] = []
            while (tok := self.peek()) is not None and tok.kind == "var" and "." not in tok.value:
                names.append(self.take().value)
                nxt = self.peek()
                if nxt is not None and nxt.kind == "comma":
                    self.take()
                    continue
                break
            nxt = self.peek()
            if names and nxt is not None and nxt.kind in ("declare", "assign"):
                assign = self.take().kind == "assign"
                declare = names
            else:
                self.pos = save
        commands = [self.command()]
        while (tok := self.peek()) is not None and tok.kind == "pipe":
            self.take()
            commands.append(self.command())
        return _Pipeline(commands, declare, assign)

    def command(self) -> _Command:
        tok = self.peek()
        if tok is None:
            raise TemplateError(f"{self.where}: empty command")
        if tok.kind == "ident" and tok.value not in ("true", "false", "nil"):
            name = self.take().value
            if name not in _FUNCTIONS and name != "include":
                raise TemplateError(f"{self.where}: function {name!r} is not supported")
            args: list[_Operand] = []
            while (nxt := self.peek()) is not None and nxt.kind not in ("pipe", "rparen"):
                args.append(self.operand())
            return _Command(name, args)
        operand = self.operand()
        nxt = self.peek()
        if nxt is not None and nxt.kind not in ("pipe", "rparen"):
            raise TemplateError(f"{self.where}: {tok.value!r} is not a function")
        return _Command(None, [operand])

    def operand(self) -> _Operand:
        tok = self.take()
        if tok.kind == "string":
            return _Operand("literal", json.loads(tok.value))
        if tok.kind == "raw":
            return _Operand("literal", tok.value[1:-1])
        if tok.kind == "number":
            text = tok.value
            return _Operand("literal", float(text) if "." in text else int(text))
        if tok.kind == "ident" and tok.value in ("true", "false", "nil"):
            return _Operand("literal", {"true": True, "false": False, "nil": None}[tok.value])
        if tok.kind == "field":
            return _Operand("field", [p for p in tok.value.split(".") if p])
        if tok.kind == "var":
            name, *path = tok.value.split(".")
            return _Operand("var", (name, path))
        if tok.kind == "lparen":
            inner = self.pipeline(allow_decl=False)
            if self.take().kind != "rparen":
                raise TemplateError(f"{self.where}: missing )")
            return _Operand("pipeline", inner)
        raise TemplateError(f"{self.where}: unexpected {tok.value!r}")


def _parse_pipeline(source: str, where: str) -> _Pipeline:
    parser = _ExprParser(_tokens(source, where), where)
    pipe = parser.pipeline()
    if parser.peek() is not None:
        raise TemplateError(f"{where}: unexpected {parser.peek()!r}")
    return pipe


# ----------------------------------------------------------------------------------------------
# Tree.


@dataclass
class _Print:
    pipe: _Pipeline


@dataclass
class _If:
    branches: list[tuple[_Pipeline, list[Any]]]
    otherwise: list[Any]


@dataclass
class _Range:
    pipe: _Pipeline
    body: list[Any]
    otherwise: list[Any]


@dataclass
class _With:
    pipe: _Pipeline
    body: list[Any]
    otherwise: list[Any]


_KEYWORD = re.compile(r"^(if|else if|else|end|range|with|define|template|block|break|continue)\b")


class _TreeParser:
    def __init__(self, items: list[_Text | _Action], defines: dict[str, list[Any]]) -> None:
        self.items = items
        self.pos = 0
        self.defines = defines

    def parse(self) -> list[Any]:
        body, stop = self.block()
        if stop is not None:
            raise TemplateError(f"{stop.where}: unexpected {{{{ {stop.source} }}}}")
        return body

    def block(self) -> tuple[list[Any], _Action | None]:
        """Nodes up to an `else`/`end` action, which is returned (None at the end of input)."""
        nodes: list[Any] = []
        while self.pos < len(self.items):
            item = self.items[self.pos]
            self.pos += 1
            if isinstance(item, _Text):
                nodes.append(item.text)
                continue
            keyword_match = _KEYWORD.match(item.source)
            keyword = keyword_match.group(1) if keyword_match else None
            rest = item.source[keyword_match.end() :].strip() if keyword_match else ""
            if keyword in ("end", "else", "else if"):
                return nodes, item
            if keyword == "if":
                nodes.append(self.if_node(rest, item.where))
            elif keyword in ("range", "with"):
                pipe = _parse_pipeline(rest, item.where)
                body, stop = self.block()
                otherwise: list[Any] = []
                if stop is not None and stop.source == "else":
                    otherwise, stop = self.block()
                self.expect_end(stop, item)
                nodes.append((_Range if keyword == "range" else _With)(pipe, body, otherwise))
            elif keyword == "define":
                name = json.loads(rest)
                body, stop = self.block()
                self.expect_end(stop, item)
                self.defines[name] = body
            elif keyword is not None:
                raise TemplateError(f"{item.where}: {keyword!r} is not supported")
            else:
                nodes.append(_Print(_parse_pipeline(item.source, item.where)))
        return nodes, None

    def if_node(self, condition: str, where: str) -> _If:
        branches: list[tuple[_Pipeline, list[Any]]] = []
        otherwise: list[Any] = []
        pipe = _parse_pipeline(condition, where)
        while True:
            body, stop = self.block()
            branches.append((pipe, body))
            if stop is None:
                raise TemplateError(f"{where}: `if` without `end`")
            if stop.source.startswith("else if"):
                pipe = _parse_pipeline(stop.source[len("else if") :].strip(), stop.where)
                continue
            if stop.source == "else":
                otherwise, stop = self.block()
            self.expect_end(stop, _Action(condition, where))
            return _If(branches, otherwise)

    @staticmethod
    def expect_end(stop: _Action | None, opener: _Action) -> None:
        if stop is None or stop.source != "end":
            raise TemplateError(f"{opener.where}: block not closed with `end`")


# ----------------------------------------------------------------------------------------------
# Values as Go/Helm prints them.


def _empty(value: Any) -> bool:
    return value is None or value is False or value == 0 or value in ("", [], {})


def _go_number(value: float) -> str:
    """fmt's %v of a float64: shortest digits, exponent form from 1e+06 or below 1e-04."""
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    decimal_exponent = len(digits) + exponent - 1
    mantissa_digits = "".join(map(str, digits))
    prefix = "-" if sign else ""
    if decimal_exponent < -4 or decimal_exponent >= 6:
        mantissa = mantissa_digits[0]
        if len(mantissa_digits) > 1:
            mantissa += "." + mantissa_digits[1:]
        exp_sign = "-" if decimal_exponent < 0 else "+"
        return f"{prefix}{mantissa}e{exp_sign}{abs(decimal_exponent):02d}"
    return prefix + format(Decimal(repr(abs(float(value)))).normalize(), "f")


def _to_str(value: Any) -> str:
    if value is None:
        return ""  # Helm replaces text/template's "<no value>" with nothing
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        # Helm reads values files as JSON numbers (float64), so ints print like floats.
        return _go_number(value)
    if isinstance(value, str):
        return value
    raise TemplateError(f"cannot print a {type(value).__name__} (use toYaml)")


def _to_yaml(value: Any) -> str:
    if value is None:
        return "null"
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")


def _indent(width: int, text: str) -> str:
    pad = " " * width
    return pad + text.replace("\n", "\n" + pad)


def _printf(fmt: str, *args: Any) -> str:
    values = iter(args)

    def one(match: re.Match[str]) -> str:
        verb = match.group(1)
        if verb == "%":
            return "%"
        value = next(values)
        return json.dumps(_to_str(value), ensure_ascii=False) if verb == "q" else _to_str(value)

    return re.sub(r"%([svdq%])", one, fmt)


def _trunc(length: int, text: str) -> str:
    if length < 0:
        return text[length:] if len(text) + length > 0 else text
    return text[:length]


def _required(message: str, value: Any) -> Any:
    if value is None or value == "":
        raise TemplateError(message)
    return value


def _fail(message: str) -> str:
    raise TemplateError(message)


def _trim_suffix(suffix: str, text: str) -> str:
    return text[: -len(suffix)] if suffix and text.endswith(suffix) else text


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "default": lambda fallback, *given: fallback if not given or _empty(given[0]) else given[0],
    "quote": lambda *xs: " ".join(
        json.dumps(_to_str(x), ensure_ascii=False) for x in xs if x is not None
    ),
    "toYaml": _to_yaml,
    "nindent": lambda width, text: "\n" + _indent(width, text),
    "indent": _indent,
    "trunc": _trunc,
    "trimSuffix": _trim_suffix,
    "printf": _printf,
    "replace": lambda old, new, text: text.replace(old, new),
    "contains": lambda needle, text: needle in text,
    "splitList": lambda sep, text: text.split(sep),
    "has": lambda needle, items: needle in items,
    "list": lambda *xs: list(xs),
    "fail": _fail,
    "required": _required,
    "b64enc": lambda text: base64.b64encode(_to_str(text).encode()).decode(),
    "sha256sum": lambda text: hashlib.sha256(text.encode()).hexdigest(),
    "not": _empty,
    "eq": lambda a, *bs: any(a == b for b in bs),
    "ne": lambda a, b: a != b,
    "and": lambda *xs: next((x for x in xs if _empty(x)), xs[-1]),
    "or": lambda *xs: next((x for x in xs if not _empty(x)), xs[-1]),
    "empty": _empty,
}


# ----------------------------------------------------------------------------------------------
# Execution.


class _Scope:
    def __init__(self, root: Any) -> None:
        self.frames: list[dict[str, Any]] = [{"$": root}]

    def push(self) -> None:
        self.frames.append({})

    def pop(self) -> None:
        self.frames.pop()

    def declare(self, name: str, value: Any) -> None:
        self.frames[-1][name] = value

    def assign(self, name: str, value: Any) -> None:
        for frame in reversed(self.frames):
            if name in frame:
                frame[name] = value
                return
        raise TemplateError(f"undefined variable {name}")

    def get(self, name: str) -> Any:
        for frame in reversed(self.frames):
            if name in frame:
                return frame[name]
        raise TemplateError(f"undefined variable {name}")


def _field(value: Any, path: list[str]) -> Any:
    for part in path:
        if value is None:
            return None  # Helm's missingkey=zero: a missing parent yields nothing
        if not isinstance(value, Mapping):
            raise TemplateError(f"cannot read .{part} of a {type(value).__name__}")
        value = value.get(part)
    return value


class _Executor:
    def __init__(self, defines: dict[str, list[Any]]) -> None:
        self.defines = defines

    def include(self, name: str, data: Any) -> str:
        if name not in self.defines:
            raise TemplateError(f"no template named {name!r}")
        return self.run(self.defines[name], data, _Scope(data))

    def run(self, nodes: list[Any], dot: Any, scope: _Scope) -> str:
        out: list[str] = []
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, _Print):
                value = self.pipeline(node.pipe, dot, scope)
                if not node.pipe.declare:
                    out.append(_to_str(value))
            elif isinstance(node, _If):
                for pipe, body in node.branches:
                    if not _empty(self.pipeline(pipe, dot, scope)):
                        out.append(self.scoped(body, dot, scope))
                        break
                else:
                    out.append(self.scoped(node.otherwise, dot, scope))
            elif isinstance(node, _With):
                value = self.pipeline(node.pipe, dot, scope, declare=False)
                if _empty(value):
                    out.append(self.scoped(node.otherwise, dot, scope))
                else:
                    out.append(self.scoped(node.body, value, scope))
            elif isinstance(node, _Range):
                out.append(self.range(node, dot, scope))
        return "".join(out)

    def scoped(self, body: list[Any], dot: Any, scope: _Scope) -> str:
        scope.push()
        try:
            return self.run(body, dot, scope)
        finally:
            scope.pop()

    def range(self, node: _Range, dot: Any, scope: _Scope) -> str:
        collection = self.pipeline(node.pipe, dot, scope, declare=False)
        pairs: list[tuple[Any, Any]]
        if isinstance(collection, Mapping):
            pairs = [(key, collection[key]) for key in sorted(collection)]  # Go sorts map keys
        elif isinstance(collection, list):
            pairs = list(enumerate(collection))
        elif collection is None:
            pairs = []
        else:
            raise TemplateError(f"cannot range over a {type(collection).__name__}")
        if not pairs:
            return self.scoped(node.otherwise, dot, scope)
        names = node.pipe.declare
        out: list[str] = []
        for key, value in pairs:
            scope.push()
            try:
                if len(names) == 1:
                    scope.declare(names[0], value)
                elif len(names) == 2:
                    scope.declare(names[0], key)
                    scope.declare(names[1], value)
                out.append(self.run(node.body, value, scope))
            finally:
                scope.pop()
        return "".join(out)

    def pipeline(self, pipe: _Pipeline, dot: Any, scope: _Scope, declare: bool = True) -> Any:
        value: Any = None
        for index, command in enumerate(pipe.commands):
            piped = [value] if index > 0 else []
            value = self.command(command, dot, scope, piped)
        if declare and pipe.declare:
            if pipe.assign:
                scope.assign(pipe.declare[0], value)
            else:
                scope.declare(pipe.declare[0], value)
        return value

    def command(self, command: _Command, dot: Any, scope: _Scope, piped: list[Any]) -> Any:
        args = [self.operand(arg, dot, scope) for arg in command.args] + piped
        if command.function is None:
            if piped:
                raise TemplateError("cannot pipe into a value that is not a function")
            return args[0]
        if command.function == "include":
            return self.include(args[0], args[1])
        try:
            return _FUNCTIONS[command.function](*args)
        except TypeError as exc:
            raise TemplateError(f"{command.function}: {exc}") from exc

    def operand(self, operand: _Operand, dot: Any, scope: _Scope) -> Any:
        if operand.kind == "literal":
            return operand.value
        if operand.kind == "field":
            return _field(dot, operand.value)
        if operand.kind == "var":
            name, path = operand.value
            return _field(scope.get(name), path)
        return self.pipeline(operand.value, dot, scope, declare=False)


# ----------------------------------------------------------------------------------------------
# Chart.


def merge_values(base: Any, override: Any) -> Any:
    """Helm's coalescing: maps merge key by key, a null override deletes the key."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _templates(chart_dir: Path) -> Iterator[Path]:
    yield from sorted((chart_dir / "templates").glob("*"))


def render_chart(
    chart_dir: Path,
    *,
    release_name: str,
    namespace: str,
    values: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Render every manifest template; returns {template path: text} like `helm template`."""
    chart_meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    default_values = yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}
    root = {
        "Values": merge_values(default_values, dict(values or {})),
        "Release": {
            "Name": release_name,
            "Namespace": namespace,
            "Service": "Helm",
            "IsInstall": True,
            "IsUpgrade": False,
            "Revision": 1,
        },
        "Chart": {
            "Name": chart_meta["name"],
            "Version": chart_meta["version"],
            "AppVersion": chart_meta.get("appVersion"),
            "Description": chart_meta.get("description"),
        },
    }
    defines: dict[str, list[Any]] = {}
    trees: dict[str, list[Any]] = {}
    # Parse everything first: a define in any file is visible to every template, as in Helm.
    for path in _templates(chart_dir):
        if path.name == "NOTES.txt" or path.suffix not in (".yaml", ".yml", ".tpl"):
            continue
        rel = f"{chart_meta['name']}/templates/{path.name}"
        tree = _TreeParser(_lex(path.read_text(), rel), defines).parse()
        if not path.name.startswith("_"):
            trees[rel] = tree
    executor = _Executor(defines)
    return {rel: executor.run(tree, root, _Scope(root)) for rel, tree in trees.items()}


def render_manifests(
    chart_dir: Path,
    *,
    release_name: str,
    namespace: str,
    values: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Render and parse: the non-empty YAML documents, in template order."""
    docs: list[dict[str, Any]] = []
    rendered = render_chart(
        chart_dir, release_name=release_name, namespace=namespace, values=values
    )
    for text in rendered.values():
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs
