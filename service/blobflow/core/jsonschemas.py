"""JSON Schema 2020-12: checking schema definitions and validating data against them.

Validators are compiled once per schema and reused; they never fetch a remote
`$ref` (a definition must not make blobflow reach out to arbitrary hosts), and
they assert `format` keywords, because an author who writes `format: uuid`
expects it to be checked.

`pattern` and `patternProperties` run on Rust's `regex` engine, which never
backtracks: time linear in the text. A pattern it refuses (backreferences,
lookaround) is a problem of the schema, never handed to a backtracking engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from blobflow.errors import PathPart, format_path

DIALECT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
MAX_ERRORS = 20
_LINEAR = jsonschema_rs.RegexOptions()
# Used only to tell why the linear engine refused a pattern, never to validate.
_BACKTRACKING = jsonschema_rs.FancyRegexOptions()
# What the linear engine refuses and fancy-regex runs: mostly these, else size.
_BACKTRACKING_SYNTAX = re.compile(r"\(\?<?[=!]|\\[1-9]|\\k<")
_FORMAT = jsonschema_rs.ValidationErrorKind.Format


@dataclass(frozen=True, slots=True)
class SchemaViolation:
    """One way an instance fails its schema; `path` locates it inside the instance."""

    path: tuple[PathPart, ...]
    message: str
    # A pattern a backtracking engine would run, refused for the time it may take.
    needs_backtracking: bool = False

    def __str__(self) -> str:
        where = format_path(self.path)
        return f"{where or '(root)'}: {self.message}"


def schema_problems(definition: Any) -> list[SchemaViolation]:
    """Why `definition` is not a usable 2020-12 schema; empty when it is."""
    if not isinstance(definition, dict | bool):
        return [SchemaViolation((), "a JSON Schema must be an object or a boolean")]
    if isinstance(definition, dict):
        dialect = definition.get("$schema", DIALECT_2020_12)
        if not (isinstance(dialect, str) and dialect.rstrip("#") == DIALECT_2020_12):
            return [SchemaViolation(("$schema",), f"only {DIALECT_2020_12} is supported")]
    try:
        jsonschema_rs.meta.validate(definition)
        _compile(definition)
    except jsonschema_rs.ValidationError as exc:
        return [_problem(exc)]
    except (ValueError, TypeError) as exc:
        return [SchemaViolation((), _first_line(str(exc)))]
    return []


def _problem(exc: jsonschema_rs.ValidationError) -> SchemaViolation:
    path = tuple(exc.instance_path)
    pattern, kind = exc.instance, exc.kind
    # A pattern the linear engine refuses is reported as failing the "regex" format.
    if not (isinstance(kind, _FORMAT) and kind.format == "regex" and isinstance(pattern, str)):
        return SchemaViolation(path, _first_line(exc.message))
    try:
        _compile({"pattern": pattern}, backtracking=True)
    except (jsonschema_rs.ValidationError, ValueError):
        return SchemaViolation(path, f"{pattern!r} is not a valid regular expression")
    if _BACKTRACKING_SYNTAX.search(pattern):
        why = "has a backreference or lookaround, which needs a backtracking engine"
    else:
        why = "is too large for the linear-time engine"
    message = f"{pattern!r} {why}: schema patterns must run in linear time"
    return SchemaViolation(path, message, needs_backtracking=True)


class SchemaValidator:
    """A compiled validator for one schema definition."""

    __slots__ = ("_refusal", "_validator")

    def __init__(self, definition: Any) -> None:
        self._validator = _compile(definition)
        self._refusal: str | None = None

    @classmethod
    def refusing(cls, reason: str) -> SchemaValidator:
        """A validator no instance passes, for a schema this version will not run."""
        validator = cls(True)
        validator._refusal = reason
        return validator

    def violations(self, instance: Any) -> list[SchemaViolation]:
        """Up to MAX_ERRORS violations, in the validator's order; empty when valid."""
        if self._refusal is not None:
            return [SchemaViolation((), self._refusal)]
        if self._validator.is_valid(instance):
            return []
        found: list[SchemaViolation] = []
        for error in self._validator.iter_errors(instance):
            found.append(SchemaViolation(tuple(error.instance_path), _first_line(error.message)))
            if len(found) >= MAX_ERRORS:
                break
        return found


def _compile(definition: Any, *, backtracking: bool = False) -> Any:
    return jsonschema_rs.Draft202012Validator(
        definition,
        offline=True,
        validate_formats=True,
        pattern_options=_BACKTRACKING if backtracking else _LINEAR,
    )


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "invalid"
