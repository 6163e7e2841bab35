"""Tokens of GitHub's expression language.

Follows the lexical rules of GitHub's implementations (actions/runner, actions/languageservices):
a number or keyword runs until a boundary character, so `0xFZ` or `b@r` is one bad token that the
error message can quote whole, and `-` or `+` always starts a number (there is no arithmetic).
"""

from __future__ import annotations

import enum
import math
import re
import string
from dataclasses import dataclass

from app.workflow.expressions.errors import MAX_EXPRESSION_LENGTH, ExpressionSyntaxError


class Kind(enum.Enum):
    LPAREN = "("
    RPAREN = ")"
    LBRACKET = "["
    RBRACKET = "]"
    COMMA = ","
    DOT = "."
    STAR = "*"
    NOT = "!"
    EQ = "=="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    AND = "&&"
    OR = "||"
    NUMBER = "number"
    STRING = "string"
    IDENT = "identifier"
    TRUE = "true"
    FALSE = "false"
    NULL = "null"
    EOF = "end of expression"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str  # the source text of the token
    offset: int  # 0-based offset in the expression
    value: object = None  # numbers: int | float; strings: the unescaped str


_BOUNDARY = frozenset("()[],.!><=&|")
_PUNCT = {
    "(": Kind.LPAREN,
    ")": Kind.RPAREN,
    "[": Kind.LBRACKET,
    "]": Kind.RBRACKET,
    ",": Kind.COMMA,
    "*": Kind.STAR,
}
_TWO = {"!=": Kind.NE, "==": Kind.EQ, "<=": Kind.LE, ">=": Kind.GE, "&&": Kind.AND, "||": Kind.OR}
_TWO_TEXTS = tuple(_TWO)
_ONE = {"!": Kind.NOT, "<": Kind.LT, ">": Kind.GT}
# After these a "." is property access; anywhere else it starts a number such as `.5`.
_DOT_FOLLOWS = frozenset({Kind.IDENT, Kind.RBRACKET, Kind.RPAREN, Kind.STAR})
_KEYWORDS = {"true": Kind.TRUE, "false": Kind.FALSE, "null": Kind.NULL}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")


def parse_number(text: str) -> int | float:
    """A string's numeric value as GitHub converts it (`' 0xff '` → 255); NaN when it has none.

    Our own parser because Python's `float()` accepts forms GitHub doesn't (`inf`, `1_000`).
    """
    s = text.strip()
    if not s:
        return 0
    if _DECIMAL.match(s):
        value = float(s)
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value
    if s in ("Infinity", "+Infinity"):
        return math.inf
    if s == "-Infinity":
        return -math.inf
    if len(s) > 2 and s.startswith("0x") and all(c in string.hexdigits for c in s[2:]):
        return int(s[2:], 16)
    if len(s) > 2 and s.startswith("0o") and all(c in "01234567" for c in s[2:]):
        return int(s[2:], 8)
    return math.nan


def tokenize(text: str) -> list[Token]:
    """The tokens of `text`, ending with an EOF token; raises ExpressionSyntaxError."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionSyntaxError(
            f"Exceeded max expression length {MAX_EXPRESSION_LENGTH} (got {len(text)})", 0
        )
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        start = i
        prev = tokens[-1].kind if tokens else None
        if c in _PUNCT:
            tokens.append(Token(_PUNCT[c], c, start))
            i += 1
        elif text.startswith(_TWO_TEXTS, i):
            pair = text[i : i + 2]
            tokens.append(Token(_TWO[pair], pair, start))
            i += 2
        elif c in _ONE:
            tokens.append(Token(_ONE[c], c, start))
            i += 1
        elif c == "." and prev in _DOT_FOLLOWS:
            tokens.append(Token(Kind.DOT, c, start))
            i += 1
        elif c == "'":
            i = _read_string(text, start, tokens)
        elif c in ".+-" or c.isdigit():
            i = _read_number(text, start, tokens)
        else:
            i = _read_word(text, start, tokens, after_dot=prev is Kind.DOT)
    tokens.append(Token(Kind.EOF, "", n))
    return tokens


def _run_end(text: str, start: int, *, dots: bool) -> int:
    i = start + 1
    while i < len(text) and not text[i].isspace():
        c = text[i]
        if c in _BOUNDARY and not (dots and c == "."):
            break
        i += 1
    return i


def _read_number(text: str, start: int, tokens: list[Token]) -> int:
    end = _run_end(text, start, dots=True)
    lexeme = text[start:end]
    value = parse_number(lexeme)
    if isinstance(value, float) and math.isnan(value):
        raise ExpressionSyntaxError(f"Unexpected symbol: '{lexeme}'", start)
    tokens.append(Token(Kind.NUMBER, lexeme, start, value))
    return end


def _read_string(text: str, start: int, tokens: list[Token]) -> int:
    i = start + 1
    parts: list[str] = []
    while True:
        quote = text.find("'", i)
        if quote < 0:
            raise ExpressionSyntaxError(f"Unclosed string: {_clip(text[start:])}", start)
        parts.append(text[i:quote])
        if text.startswith("''", quote):
            parts.append("'")
            i = quote + 2
            continue
        end = quote + 1
        break
    tokens.append(Token(Kind.STRING, text[start:end], start, "".join(parts)))
    return end


def _read_word(text: str, start: int, tokens: list[Token], *, after_dot: bool) -> int:
    end = _run_end(text, start, dots=False)
    lexeme = text[start:end]
    if not _IDENT.match(lexeme):
        raise ExpressionSyntaxError(f"Unexpected symbol: '{_clip(lexeme)}'", start)
    # After a dot every word is a property name: `foo.true`, `foo.NaN` are properties.
    if not after_dot and lexeme in _KEYWORDS:
        tokens.append(Token(_KEYWORDS[lexeme], lexeme, start))
    elif not after_dot and lexeme == "NaN":
        tokens.append(Token(Kind.NUMBER, lexeme, start, math.nan))
    elif not after_dot and lexeme == "Infinity":
        tokens.append(Token(Kind.NUMBER, lexeme, start, math.inf))
    else:
        tokens.append(Token(Kind.IDENT, lexeme, start))
    return end


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
