"""JSON Schema 2020-12: checking schema definitions and validating data against them.

Validators are compiled once per schema and reused; they never fetch a remote
`$ref` (a definition must not make blobflow reach out to arbitrary hosts), and
they assert `format` keywords, because an author who writes `format: uuid`
expects it to be checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from blobflow.errors import PathPart, format_path

DIALECT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
MAX_ERRORS = 20


@dataclass(frozen=True, slots=True)
class SchemaViolation:
    """One way an instance fails its schema; `path` locates it inside the instance."""

    path: tuple[PathPart, ...]
    message: str

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
        return [SchemaViolation(tuple(exc.instance_path), _first_line(exc.message))]
    except (ValueError, TypeError) as exc:
        return [SchemaViolation((), _first_line(str(exc)))]
    return []


class SchemaValidator:
    """A compiled validator for one schema definition."""

    __slots__ = ("_validator",)

    def __init__(self, definition: Any) -> None:
        self._validator = _compile(definition)

    def violations(self, instance: Any) -> list[SchemaViolation]:
        """Up to MAX_ERRORS violations, in the validator's order; empty when valid."""
        if self._validator.is_valid(instance):
            return []
        found: list[SchemaViolation] = []
        for error in self._validator.iter_errors(instance):
            found.append(SchemaViolation(tuple(error.instance_path), _first_line(error.message)))
            if len(found) >= MAX_ERRORS:
                break
        return found


def _compile(definition: Any) -> Any:
    return jsonschema_rs.Draft202012Validator(definition, offline=True, validate_formats=True)


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "invalid"
