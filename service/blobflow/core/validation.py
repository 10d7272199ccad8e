"""Validating one source document against its model, with messages a person can act on.

pydantic's messages are written for programmers ("Extra inputs are not
permitted"); authors of definitions get "unknown field 'timout_seconds' (did
you mean 'timeout_seconds'?)" and the line it is on.
"""

from __future__ import annotations

import difflib
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError

from blobflow.core.definitions import MODELS
from blobflow.core.sources import SourceDocument
from blobflow.errors import PathPart, Problem


def validate_document(document: SourceDocument) -> tuple[BaseModel | None, list[Problem]]:
    """The typed model of `document`, or None with every problem found."""
    model = MODELS[document.kind]
    if not isinstance(document.data, dict):
        problem = Problem(document.source, (), f"a {document.kind} must be a mapping", 1)
        return None, [problem]
    try:
        return model.model_validate(document.data), []
    except ValidationError as exc:
        problems = [_problem(document, error) for error in exc.errors(include_url=False)]
        return None, problems


def _problem(document: SourceDocument, error: Any) -> Problem:
    path = tuple(part for part in error["loc"] if isinstance(part, str | int))
    kind = error["type"]
    if kind == "missing":
        message = "is required"
    elif kind == "extra_forbidden":
        name = str(path[-1]) if path else ""
        close = difflib.get_close_matches(name, _field_names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        message = f"unknown field{hint}"
    else:
        message = str(error["msg"])
        message = message.removeprefix("Value error, ").replace("Input should be", "must be")
        message = message.replace("String should", "must").replace("List should", "must")
    return Problem(document.source, path, message, document.line_of(path))


@cache
def _field_names() -> tuple[str, ...]:
    names: set[str] = set()
    pending: list[type[BaseModel]] = list(MODELS.values())
    while pending:
        model = pending.pop()
        for name, info in model.model_fields.items():
            names.add(name)
            pending.extend(_nested_models(info.annotation))
    return tuple(sorted(names))


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _nested_models(arg)]


def source_problem(document: SourceDocument, path: tuple[PathPart, ...], message: str) -> Problem:
    """A problem located by path inside `document`."""
    return Problem(document.source, path, message, document.line_of(path))
