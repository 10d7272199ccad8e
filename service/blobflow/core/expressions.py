"""Expressions: how definitions point at data.

A value in a definition may be a reference (`$.input.blob_id`, the referenced
JSON value), a template that inserts references into text
(`"blob {$.input.blob_id}"`), or plain data holding either. Conditions, which
decide whether a step runs, are built from the same references
(`blobflow.core.conditions`).

Expressions are compiled once when definitions load and evaluated for every
execution, so a compiled expression is a small frozen tree with an
`evaluate(root)` method. Evaluation is path lookup and JSON comparison only:
nothing is ever an attribute access, a call or code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from blobflow.core.expression_tokens import (
    check_length,
    scan_reference,
    skip_space,
)
from blobflow.core.jsonvalues import MISSING, compact_json, lookup
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
