"""Records as the API shows them: the names of §7, `_id` as `id`, no internal fields."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from blobflow.core.listings import SUMMARY_FIELDS
from blobflow.core.records import Execution, LogLine, log_from_document, to_document

# Kept for the engine's own use, not part of the record of §7.
_INTERNAL = frozenset({"vars", "deltas_published"})


def execution_view(execution: Execution) -> dict[str, Any]:
    document = to_document(execution)
    view = {"id": document.pop("_id")}
    view.update((k, v) for k, v in document.items() if k not in _INTERNAL)
    return view


def summary_view(document: Mapping[str, Any]) -> dict[str, Any]:
    """A listing entry, from the summary projection of the stored document."""
    view = {"id": document["_id"]}
    view.update((name, document.get(name)) for name in SUMMARY_FIELDS)
    view["cancel_requested"] = bool(view["cancel_requested"])
    return view


def log_lines(documents: Sequence[Mapping[str, Any]]) -> list[LogLine]:
    return [log_from_document(document) for document in documents]


def delta_view(document: Mapping[str, Any]) -> dict[str, Any]:
    view = {"id": document["_id"]}
    view.update((k, v) for k, v in document.items() if k != "_id")
    return view
