"""Tokens of the expression language: references, JSON literals and operators.

The scanners here are shared by the three places expressions appear: a
whole-string reference, a `{$.…}` placeholder inside a template, and a
condition. Every position they report is an offset into the full text, so an
error inside a placeholder points at the right character of the YAML value.
`TokenStream` is the cursor the condition parser reads from; it also reads
JSON literals, which hold no expressions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from blobflow.errors import ExpressionError

MAX_LENGTH = 10_000
MAX_NESTING = 64

# Two-character operators first, so `<=` is not read as `<` followed by `=`.
_PAIRS = ("==", "!=", "<=", ">=", "&&", "||")
OPERATORS = (*_PAIRS, "<", ">", "!", "(", ")", "[", "]", "{", "}", ",", ":")
# Single characters people type from other languages, with what they meant.
_MISTAKES = {"=": "==", "&": "&&", "|": "||"}

_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_HEX = frozenset("0123456789abcdefABCDEF")
_ESCAPES = {
    '"': '"',
    "'": "'",  # so a single-quoted string can hold a single quote
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


@dataclass(frozen=True, slots=True)
class Token:
    """`kind` is one of ref, number, string, name, op, eof; `value` is the decoded value."""

    kind: str
    text: str
    value: Any
    position: int

    def describe(self) -> str:
        """How an error message names this token."""
        if self.kind == "eof":
            return "end of expression"
        if self.kind in ("ref", "number", "string"):
            shown = self.text if len(self.text) <= 40 else self.text[:37] + "..."
            return f"{'reference' if self.kind == 'ref' else self.kind} {shown}"
        return repr(self.text)


def check_length(text: str) -> None:
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"expression is longer than {MAX_LENGTH} characters", text, MAX_LENGTH
        )


def is_name_char(char: str) -> bool:
    return char.isalnum() or char in ("_", "-")


def skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def scan_reference(text: str, start: int) -> tuple[tuple[str | int, ...], int]:
    """Read the reference whose `$` is at `start`; returns its path and where it ends.

    It stops at the first character that cannot continue a path, so the
    caller decides what may follow (`}` in a template, an operator in a condition).
    """
    path: list[str | int] = []
    position = start + 1
    while position < len(text):
        char = text[position]
        if char == ".":
            end = position + 1
            while end < len(text) and is_name_char(text[end]):
                end += 1
            if end == position + 1:
                raise ExpressionError("expected a name after '.'", text, end)
            path.append(text[position + 1 : end])
            position = end
        elif char == "[":
            position += 1
            inner = text[position : position + 1]
            if inner in ('"', "'"):
                key, position = scan_string(text, position)
                path.append(key)
            elif "0" <= inner <= "9":
                end = position
                while end < len(text) and "0" <= text[end] <= "9":
                    end += 1
                path.append(_to_int(text, position, end))
                position = end
            else:
                raise ExpressionError("expected an index or a quoted key after '['", text, position)
            if text[position : position + 1] != "]":
                raise ExpressionError("expected ']'", text, position)
            position += 1
        else:
            break
    return tuple(path), position


def scan_string(text: str, start: int) -> tuple[str, int]:
    """Read the quoted string at `start` (JSON escapes, either quote); returns it and its end."""
    quote = text[start]
    chunks: list[str] = []
    position = start + 1
    while True:
        if position >= len(text):
            raise ExpressionError("unterminated string", text, start)
        char = text[position]
        if char == quote:
            return "".join(chunks), position + 1
        if char == "\\":
            escape = text[position + 1 : position + 2]
            if escape in _ESCAPES:
                chunks.append(_ESCAPES[escape])
                position += 2
            elif escape == "u":
                decoded, position = _unicode_escape(text, position)
                chunks.append(decoded)
            elif not escape:
                raise ExpressionError("unterminated string", text, start)
            else:
                raise ExpressionError(f"invalid escape '\\{escape}' in string", text, position)
        elif char < " ":
            # As in JSON: a raw newline or tab inside quotes is almost always a mistake.
            message = f"control character {char!r} in string; use an escape such as \\n"
            raise ExpressionError(message, text, position)
        else:
            chunks.append(char)
            position += 1


def _hex4(text: str, position: int) -> int | None:
    digits = text[position : position + 4]
    # int(x, 16) alone would also accept "_", "+" and spaces.
    if len(digits) != 4 or not _HEX.issuperset(digits):
        return None
    return int(digits, 16)


def _unicode_escape(text: str, position: int) -> tuple[str, int]:
    code = _hex4(text, position + 2)
    if code is None:
        raise ExpressionError("invalid \\u escape: expected four hex digits", text, position)
    end = position + 6
    # A surrogate pair spelled as two escapes is one character, as in JSON.
    if 0xD800 <= code < 0xDC00 and text[end : end + 2] == "\\u":
        low = _hex4(text, end + 2)
        if low is not None and 0xDC00 <= low < 0xE000:
            return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), end + 6
    return chr(code), end


def _to_int(text: str, start: int, end: int) -> int:
    try:
        return int(text[start:end])
    except ValueError:  # more digits than Python converts
        raise ExpressionError("number out of range", text, start) from None


def scan_number(text: str, start: int) -> tuple[int | float, int]:
    match = _NUMBER.match(text, start)
    if match is None:
        raise ExpressionError("unexpected '-'", text, start)
    end = match.end()
    if end < len(text) and (is_name_char(text[end]) or text[end] == "."):
        raise ExpressionError("invalid number", text, start)
    literal = match.group()
    if literal.lstrip("-").isdigit():
        return _to_int(text, start, end), end
    number = float(literal)
    if number in (float("inf"), float("-inf")):
        raise ExpressionError("number out of range", text, start)
    return number, end


def tokenize(text: str) -> list[Token]:
    """The tokens of a condition, ending with an `eof` token."""
    tokens: list[Token] = []
    position = 0
    while True:
        start = position = skip_space(text, position)
        if position >= len(text):
            tokens.append(Token("eof", "", None, position))
            return tokens
        char = text[position]
        value: Any
        if char == "$":
            value, position = scan_reference(text, position)
            kind = "ref"
        elif char in ('"', "'"):
            value, position = scan_string(text, position)
            kind = "string"
        elif char == "-" or "0" <= char <= "9":
            value, position = scan_number(text, position)
            kind = "number"
        elif char.isalpha() or char == "_":
            while position < len(text) and (text[position].isalnum() or text[position] == "_"):
                position += 1
            value = text[start:position]
            kind = "op" if value == "in" else "name"
        else:
            value = next((op for op in OPERATORS if text.startswith(op, position)), None)
            if value is None:
                if char in _MISTAKES:
                    message = f"unexpected {char!r} (did you mean {_MISTAKES[char]!r}?)"
                    raise ExpressionError(message, text, position)
                raise ExpressionError(f"unexpected character {char!r}", text, position)
            position += len(value)
            kind = "op"
        tokens.append(Token(kind, text[start:position], value, start))


_NAMES = {"true": True, "false": False, "null": None}
HINTS = {"and": "use &&", "or": "use ||", "not": "use !"}


class TokenStream:
    """A cursor over a condition's tokens that also reads JSON literals.

    Literals hold no expressions, so they are read here; the grammar of
    operators lives with the nodes it builds, in `blobflow.core.expressions`.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at_op(self, *ops: str) -> bool:
        token = self.peek()
        return token.kind == "op" and token.text in ops

    def expect(self, op: str, context: str) -> None:
        token = self.take()
        if token.kind != "op" or token.text != op:
            raise self.error(f"expected {op!r}{context}, found {token.describe()}", token)

    def closing(self, op: str, opener: Token) -> None:
        self.expect(op, f" to close {opener.text!r} at position {opener.position}")

    def error(self, message: str, token: Token) -> ExpressionError:
        return ExpressionError(message, self.text, token.position)

    def enter(self, token: Token) -> None:
        # Bounded nesting keeps parsing and evaluation far from Python's recursion limit.
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"nested more than {MAX_NESTING} levels deep", token)

    def leave(self) -> None:
        self.depth -= 1

    def unknown_name(self, token: Token) -> ExpressionError:
        hint = HINTS.get(token.text.lower(), "use true, false or null")
        if token.text.lower() not in (*_NAMES, *HINTS, "none"):
            hint += "; references start with '$' and strings need quotes"
        return self.error(f"unknown name {token.text!r} ({hint})", token)

    def literal(self) -> Any:
        token = self.take()
        if token.kind in ("number", "string"):
            return token.value
        if token.kind == "name":
            if token.text in _NAMES:
                return _NAMES[token.text]
            raise self.unknown_name(token)
        if token.kind == "op" and token.text == "[":
            array: list[Any] = []
            self.elements(token, "]", lambda: array.append(self.literal()))
            return array
        if token.kind == "op" and token.text == "{":
            members: dict[str, Any] = {}
            self.elements(token, "}", lambda: self.member(members))
            return members
        if token.kind == "ref":
            message = "array and object literals may hold only literals, not references"
            raise self.error(message, token)
        raise self.error(f"expected a value, found {token.describe()}", token)

    def elements(self, opener: Token, close: str, element: Callable[[], None]) -> None:
        """The comma-separated elements of an array or object literal, up to `close`."""
        self.enter(opener)
        if self.at_op(close):
            self.take()
        else:
            element()
            while self.at_op(","):
                self.take()
                element()
            self.closing(close, opener)
        self.leave()

    def member(self, into: dict[str, Any]) -> None:
        key = self.take()
        if key.kind != "string":
            raise self.error(f"expected a quoted key, found {key.describe()}", key)
        self.expect(":", " after the key")
        into[key.value] = self.literal()
