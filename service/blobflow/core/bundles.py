"""Registration bundles: what a registrar sends, and what it is answered.

A bundle `{"schemas": [...], "workflows": [...], "providers": [...]}` becomes
source documents named after their place in it (`workflows[1]`), so problems
point at the item. The reply is `{"ok": true, "results": [...]}` or
`{"ok": false, "errors": [...]}`, the same over NATS and HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from blobflow.core.definitions import Kind
from blobflow.core.jsonvalues import loads
from blobflow.core.sources import KIND_FOLDERS, SourceDocument
from blobflow.core.yamlsafe import load_yaml
from blobflow.errors import (
    DefinitionError,
    PathPart,
    Problem,
    YamlLoadError,
    did_you_mean,
    format_path,
)

BUNDLE: Final = "bundle"  # the source of problems with the bundle as a whole
# Enough to fix a bundle by; thousands more would only risk the reply exceeding
# the server's max_payload, and then the requester would see a bare timeout.
MAX_ERRORS: Final = 200
_ITEM: Final = re.compile(r"(schemas|workflows|providers)\[[0-9]+\]\Z")
_REGISTERED: Final = re.compile(r"registered:(schema|workflow|provider):(.+):v([0-9]+)\Z", re.S)

Lines = dict[tuple[PathPart, ...], int]


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One registered item: its version, and whether this registration made it."""

    kind: Kind
    id: str
    version: int
    changed: bool


def results_reply(results: Sequence[ItemResult]) -> dict[str, Any]:
    return {
        "ok": True,
        "results": [
            {"kind": r.kind, "id": r.id, "version": r.version, "changed": r.changed}
            for r in results
        ],
    }


def bundle_documents(bundle: Any) -> list[SourceDocument]:
    """The items of a bundle as source documents, schemas first; DefinitionError if malformed."""
    return _documents(bundle, {})


def parse_bundle(payload: bytes, content_type: str | None = None) -> list[SourceDocument]:
    """A JSON (default) or YAML (`content_type` mentions yaml) bundle as source documents."""
    lines: Lines = {}
    if content_type and "yaml" in content_type.lower():
        try:
            loaded = load_yaml(payload)
        except YamlLoadError as exc:
            raise DefinitionError([Problem(BUNDLE, (), exc.message, exc.line)]) from None
        data, lines = loaded.data, loaded.lines
    else:
        try:
            data = loads(payload)
        except ValueError as exc:  # orjson's JSONDecodeError and UnicodeDecodeError too
            raise DefinitionError([Problem(BUNDLE, (), f"invalid JSON: {exc}")]) from None
    return _documents(data, lines)


def error_reply(error: DefinitionError, documents: Sequence[SourceDocument] = ()) -> dict[str, Any]:
    """`{"ok": false, "errors": [...]}` naming kind, id, path and message of each problem."""
    by_source = {document.source: document for document in documents}
    errors = [_error(problem, by_source) for problem in error.problems[:MAX_ERRORS]]
    if len(error.problems) > MAX_ERRORS:
        more = f"... and {len(error.problems) - MAX_ERRORS} more problems"
        errors.append({"kind": None, "id": None, "path": "", "message": more})
    return {"ok": False, "errors": errors}


def internal_error_reply(exc: BaseException) -> dict[str, Any]:
    text = str(exc)[:300] or "no details"
    return failure_reply(f"internal error: {type(exc).__name__}: {text}")


def _documents(bundle: Any, lines: Lines) -> list[SourceDocument]:
    if not isinstance(bundle, dict):
        message = "a bundle must be an object with lists schemas, workflows and providers"
        raise DefinitionError([Problem(BUNDLE, (), message, lines.get(()))])
    problems: list[Problem] = []
    for key in bundle:
        if key not in KIND_FOLDERS:
            hint = did_you_mean(key, KIND_FOLDERS)
            message = f"unknown key{hint}; a bundle holds schemas, workflows and providers"
            problems.append(Problem(BUNDLE, (key,), message, lines.get((key,))))
    documents: list[SourceDocument] = []
    for key, kind in KIND_FOLDERS.items():
        items = bundle.get(key, [])
        if not isinstance(items, list):
            problems.append(Problem(BUNDLE, (key,), "must be a list", lines.get((key,))))
            continue
        for index, item in enumerate(items):
            source = f"{key}[{index}]"
            if not isinstance(item, dict):
                message = f"a {kind} must be an object"
                problems.append(Problem(source, (), message, lines.get((key, index))))
                continue
            documents.append(SourceDocument(kind, source, item, _item_lines(lines, key, index)))
    if problems:
        raise DefinitionError(problems)
    return documents


def _item_lines(lines: Lines, key: str, index: int) -> Lines:
    """The lines of one item, keyed by paths inside it, as if it were its own file."""
    return {path[2:]: line for path, line in lines.items() if path[:2] == (key, index)}


def _error(problem: Problem, by_source: Mapping[str, SourceDocument]) -> dict[str, Any]:
    kind: Kind | None = None
    item_id: str | None = None
    where = problem.source
    document = by_source.get(problem.source)
    if document is not None:
        kind, item_id = document.kind, document.item_id
    elif registered := _REGISTERED.match(problem.source):
        # An item registered earlier that this bundle breaks (e.g. a schema it uses).
        kind, item_id = cast(Kind, registered.group(1)), registered.group(2)
        where = f"registered version {registered.group(3)}"
    elif item := _ITEM.match(problem.source):
        kind = KIND_FOLDERS[item.group(1)]
    notes = [where] if where != BUNDLE else []
    if problem.line is not None:
        notes.append(f"line {problem.line}")
    message = f"{problem.message} ({', '.join(notes)})" if notes else problem.message
    return {"kind": kind, "id": item_id, "path": format_path(problem.path), "message": message}


def failure_reply(message: str) -> dict[str, Any]:
    return {"ok": False, "errors": [{"kind": None, "id": None, "path": "", "message": message}]}
