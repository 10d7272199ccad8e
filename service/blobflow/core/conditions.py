"""Conditions: whether a step runs, from references and JSON literals.

`== != < <= > >= in && || !`, parsed once when definitions load into a small
frozen tree whose `evaluate(root)` is path lookup and JSON comparison only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from blobflow.core.expression_tokens import HINTS, TokenStream, check_length
from blobflow.core.expressions import Literal, Reference
from blobflow.core.jsonvalues import compare, strict_equal
from blobflow.errors import ExpressionError


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
