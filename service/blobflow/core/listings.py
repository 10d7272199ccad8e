"""What the API lists: the filters of an execution listing, its summary fields, a page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Document = dict[str, Any]
LIST_FILTERS = ("workflow_id", "status", "user_id", "provider_id", "blob_id")
# A listing shows the summary; the record route shows the rest.
SUMMARY_FIELDS = (
    "event_id",
    "provider_id",
    "workflow_id",
    "workflow_version",
    "blob_id",
    "user_id",
    "priority",
    "status",
    "cancel_requested",
    "error",
    "progress",
    "created_at",
    "started_at",
    "completed_at",
    "cancelled_at",
)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Document]
    total: int


@dataclass(frozen=True, slots=True)
class ExecutionLogs:
    workflow_id: str
    user_id: str
    lines: list[Document]
