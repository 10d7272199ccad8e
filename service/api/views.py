"""Records as the API shows them: the names of §7, `_id` as `id`, no internal fields."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from service.queries import SUMMARY_FIELDS
from service.records import Execution, LogLine, log_from_document


def execution_view(execution: Execution) -> dict[str, Any]:
    return {
        "id": execution.id,
        "event_id": execution.event_id,
        "provider_id": execution.provider_id,
        "workflow_id": execution.workflow_id,
        "workflow_version": execution.workflow_version,
        "blob_id": execution.blob_id,
        "user_id": execution.user_id,
        "priority": execution.priority,
        "status": execution.status,
        "cancel_requested": execution.cancel_requested,
        "input": execution.input,
        "output": execution.output,
        "error": execution.error,
        "progress": execution.progress,
        "created_at": execution.created_at,
        "started_at": execution.started_at,
        "completed_at": execution.completed_at,
        "cancelled_at": execution.cancelled_at,
        "steps": [
            {
                "id": s.id,
                "kind": s.kind,
                "status": s.status,
                "attempts": s.attempts,
                "started_at": s.started_at,
                "completed_at": s.completed_at,
                "duration_ms": s.duration_ms,
                "request": s.request,
                "output": s.output,
                "http_status": s.http_status,
                "error": s.error,
            }
            for s in execution.steps
        ],
        "decisions": [
            {"step_id": d.step_id, "expression": d.expression, "result": d.result}
            for d in execution.decisions
        ],
    }


def summary_view(document: Mapping[str, Any]) -> dict[str, Any]:
    """A listing entry, from the summary projection of the stored document."""
    view = {"id": document["_id"]}
    view.update((name, document.get(name)) for name in SUMMARY_FIELDS)
    view["cancel_requested"] = bool(view["cancel_requested"])
    return view


def log_view(line: LogLine) -> dict[str, Any]:
    return {
        "timestamp": line.timestamp,
        "level": line.level,
        "step_id": line.step_id,
        "message": line.message,
    }


def log_lines(documents: Sequence[Mapping[str, Any]]) -> list[LogLine]:
    return [log_from_document(document) for document in documents]


def delta_view(document: Mapping[str, Any]) -> dict[str, Any]:
    view = {"id": document["_id"]}
    view.update((k, v) for k, v in document.items() if k != "_id")
    return view
