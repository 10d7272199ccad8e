"""Expressions: how definitions point at data and decide whether a step runs.

A value in a definition may be a reference (`$.input.blob_id`, the referenced
JSON value), a template that inserts references into text
(`"blob {$.input.blob_id}"`), or plain data holding either. A step's condition
combines references and JSON literals with `== != < <= > >= in && || !`.

Expressions are compiled once when definitions load and evaluated for every
execution, so a compiled expression is a small frozen tree with an
`evaluate(root)` method. Evaluation is path lookup and JSON comparison only:
nothing is ever an attribute access, a call or code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from blobflow.core.expression_tokens import (
    HINTS,
    TokenStream,
    check_length,
    scan_reference,
    skip_space,
)
from blobflow.core.jsonvalues import MISSING, compact_json, compare, lookup, strict_equal
from blobflow.errors import ExpressionError, PathPart

ONE_REFERENCE = (
    "a value starting with '$' must be exactly one reference; "
    "use {$.…} to insert a reference into text"
)


@dataclass(frozen=True, slots=True)
class Reference:
    """`$` followed by names and indexes; a path that leads nowhere is null."""

    path: tuple[str | int, ...]
    text: str

    def evaluate(self, root: Any) -> Any:
        value = lookup(root, self.path)
        return None if value is MISSING else value

    def references(self) -> Iterator[Reference]:
        yield self


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any

    def evaluate(self, root: Any) -> Any:
        return self.value

    def references(self) -> Iterator[Reference]:
        yield from ()


@dataclass(frozen=True, slots=True)
class Template:
    """Text with `{$.…}` placeholders; `parts` alternate text and references."""

    parts: tuple[str | Reference, ...]
    text: str

    def evaluate(self, root: Any) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                value = part.evaluate(root)
                out.append(value if isinstance(value, str) else compact_json(value))
        return "".join(out)

    def references(self) -> Iterator[Reference]:
        for part in self.parts:
            if isinstance(part, Reference):
                yield part


@dataclass(frozen=True, slots=True)
class MapValue:
    items: tuple[tuple[str, Value], ...]

    def evaluate(self, root: Any) -> dict[str, Any]:
        return {key: value.evaluate(root) for key, value in self.items}

    def references(self) -> Iterator[Reference]:
        for _, value in self.items:
            yield from value.references()


@dataclass(frozen=True, slots=True)
class ListValue:
    items: tuple[Value, ...]

    def evaluate(self, root: Any) -> list[Any]:
        return [value.evaluate(root) for value in self.items]

    def references(self) -> Iterator[Reference]:
        for value in self.items:
            yield from value.references()


Value = Literal | Reference | Template | MapValue | ListValue


def parse_reference(text: str) -> Reference:
    check_length(text)
    if not text.startswith("$"):
        raise ExpressionError("a reference starts with '$'", text, 0)
    path, end = scan_reference(text, 0)
    if end != len(text):
        raise ExpressionError(ONE_REFERENCE, text, end)
    return Reference(path, text)


def compile_value(
    value: Any, problems: list[tuple[tuple[PathPart, ...], ExpressionError]] | None = None
) -> Value:
    """Compile data from YAML/JSON whose strings may be references or templates.

    With a `problems` list every broken string is reported with its path
    relative to `value` and kept as a literal, so one load reports them all.
    """
    return _compile(value, (), problems)


def _compile(
    value: Any,
    at: tuple[PathPart, ...],
    problems: list[tuple[tuple[PathPart, ...], ExpressionError]] | None,
) -> Value:
    if isinstance(value, dict):
        return MapValue(tuple((k, _compile(v, (*at, k), problems)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ListValue(tuple(_compile(v, (*at, i), problems) for i, v in enumerate(value)))
    if not isinstance(value, str):
        return Literal(value)
    try:
        return _compile_string(value)
    except ExpressionError as exc:
        if problems is None:
            raise
        problems.append((at, exc))
        return Literal(value)


def _compile_string(text: str) -> Value:
    # Only `$`, `$.` and `$[` start a reference, so prices such as "$5" stay text.
    if text == "$" or text.startswith(("$.", "$[")):
        return parse_reference(text)
    if "{" not in text:
        return Literal(text)
    return _parse_template(text)


def _opens_placeholder(text: str, brace: int) -> bool:
    """Whether the `{` at `brace` starts a placeholder: `{`, optional spaces, `$`."""
    dollar = skip_space(text, brace + 1)
    return text[brace] == "{" and text[dollar : dollar + 1] == "$"


def _parse_template(text: str) -> Value:
    parts: list[str | Reference] = []
    literal: list[str] = []
    seen_placeholder = False
    position = 0
    while (brace := text.find("{", position)) >= 0:
        literal.append(text[position:brace])
        if brace + 1 < len(text) and _opens_placeholder(text, brace + 1):
            # `{{$` is an escaped `{$`: keep one brace, the rest is plain text.
            literal.append("{")
            position = brace + 2
            seen_placeholder = True
        elif _opens_placeholder(text, brace):
            if text_before := "".join(literal):
                parts.append(text_before)
            literal = []
            reference, position = _placeholder(text, brace)
            parts.append(reference)
            seen_placeholder = True
        else:
            literal.append("{")
            position = brace + 1
    literal.append(text[position:])
    if not seen_placeholder:
        return Literal(text)
    if tail := "".join(literal):
        parts.append(tail)
    return Template(tuple(parts), text)


def _placeholder(text: str, brace: int) -> tuple[Reference, int]:
    start = skip_space(text, brace + 1)
    path, end = scan_reference(text, start)
    close = skip_space(text, end)
    if close >= len(text):
        raise ExpressionError("unterminated placeholder: '{' has no closing '}'", text, brace)
    if text[close] != "}":
        raise ExpressionError("expected '}' after the reference in a placeholder", text, close)
    return Reference(path, text[start:end]), close + 1


# Conditions ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Node, ...]  # n-ary, so a long chain does not nest deeply

    def evaluate(self, root: Any) -> bool:
        return any(operand.evaluate(root) is True for operand in self.operands)

    def references(self) -> Iterator[Reference]:
        for operand in self.operands:
            yield from operand.references()


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Node, ...]

    def evaluate(self, root: Any) -> bool:
        return all(operand.evaluate(root) is True for operand in self.operands)

    def references(self) -> Iterator[Reference]:
        for operand in self.operands:
            yield from operand.references()


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node

    def evaluate(self, root: Any) -> bool:
        return self.operand.evaluate(root) is not True

    def references(self) -> Iterator[Reference]:
        return self.operand.references()


def _ordered(test: Callable[[int], bool]) -> Callable[[Any, Any], bool]:
    def check(left: Any, right: Any) -> bool:
        order = compare(left, right)
        return order is not None and test(order)

    return check


def _contains(item: Any, container: Any) -> bool:
    if isinstance(container, list | tuple):
        return any(strict_equal(item, element) for element in container)
    if isinstance(item, str) and isinstance(container, str | dict):
        return item in container
    return False


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": strict_equal,
    "!=": lambda left, right: not strict_equal(left, right),
    "<": _ordered(lambda order: order < 0),
    "<=": _ordered(lambda order: order <= 0),
    ">": _ordered(lambda order: order > 0),
    ">=": _ordered(lambda order: order >= 0),
    "in": _contains,
}


@dataclass(frozen=True, slots=True)
class Comparison:
    operator: str
    left: Node
    right: Node

    def evaluate(self, root: Any) -> bool:
        left, right = self.left.evaluate(root), self.right.evaluate(root)
        try:
            return _COMPARISONS[self.operator](left, right)
        except RecursionError:
            # strict_equal recurses, and event data may nest up to orjson's 1,024
            # levels; a condition must never fail a run, so such a pair is unequal.
            return False

    def references(self) -> Iterator[Reference]:
        yield from self.left.references()
        yield from self.right.references()


Node = Reference | Literal | Or | And | Not | Comparison


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed condition; it holds only when its value is exactly `true`."""

    text: str
    expression: Node

    def evaluate(self, root: Any) -> bool:
        return self.expression.evaluate(root) is True

    def references(self) -> Iterator[Reference]:
        return self.expression.references()


def parse_condition(text: str) -> Condition:
    check_length(text)
    return Condition(text, _Parser(text).parse())


class _Parser(TokenStream):
    """Recursive descent: `||` < `&&` < `!` < comparison < primary."""

    def parse(self) -> Node:
        if self.peek().kind == "eof":
            raise ExpressionError("expression is empty", self.text, 0)
        node = self.or_expression()
        token = self.peek()
        if token.text == ")":
            raise self.error("unmatched ')'", token)
        if token.kind == "name" and token.text.lower() in HINTS:
            raise self.unknown_name(token)  # `and`, `or` where an operator belongs
        if token.kind != "eof":
            message = f"unexpected {token.describe()}; expected an operator or the end"
            raise self.error(message, token)
        return node

    def or_expression(self) -> Node:
        operands = [self.and_expression()]
        while self.at_op("||"):
            self.take()
            operands.append(self.and_expression())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_expression(self) -> Node:
        operands = [self.not_expression()]
        while self.at_op("&&"):
            self.take()
            operands.append(self.not_expression())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def not_expression(self) -> Node:
        if not self.at_op("!"):
            return self.comparison()
        self.enter(self.take())
        node = Not(self.not_expression())
        self.leave()
        return node

    def comparison(self) -> Node:
        left = self.primary()
        if not self.at_op(*_COMPARISONS):
            return left
        operator = self.take().text
        right = self.primary()
        if self.at_op(*_COMPARISONS):
            message = "comparisons cannot be chained; combine them with && or ||"
            raise self.error(message, self.peek())
        return Comparison(operator, left, right)

    def primary(self) -> Node:
        token = self.peek()
        if token.kind == "ref":
            self.take()
            return Reference(token.value, token.text)
        if self.at_op("("):
            self.enter(self.take())
            node = self.or_expression()
            self.closing(")", token)
            self.leave()
            return node
        if self.at_op("!"):
            raise self.error("'!' here needs parentheses, e.g. $.a == (!$.b)", token)
        return Literal(self.literal())
