"""Execution records (§7): what one run of one workflow did, step by step.

Plain frozen dataclasses, changed with `dataclasses.replace`, plus the
conversion to and from the MongoDB document. The executor builds them; the
store persists them; the API shows them.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, cast

ExecutionStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
StepStatus = Literal["pending", "running", "completed", "failed", "skipped", "cancelled"]
LogLevel = Literal["debug", "info", "warning", "error"]

TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
# A step in one of these states is never called again on resume.
SETTLED_STEPS: frozenset[str] = frozenset({"completed", "failed", "skipped"})


def now() -> datetime:
    # MongoDB stores milliseconds; truncating here keeps records equal after a round trip.
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def event_execution_id(event_id: str, provider_id: str, workflow_id: str) -> str:
    """The same event and binding always give the same id, so redelivery cannot duplicate."""
    key = "\0".join((event_id, provider_id, workflow_id)).encode()
    return hashlib.sha256(key).hexdigest()[:32]


def manual_execution_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class StepRecord:
    id: str
    kind: Literal["step", "compensation"] = "step"
    status: StepStatus = "pending"
    attempts: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: int | None = None
    request: Mapping[str, Any] | None = None
    output: Any = None
    http_status: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    step_id: str
    expression: str
    result: bool


@dataclass(frozen=True, slots=True)
class LogLine:
    timestamp: datetime
    level: LogLevel
    step_id: str | None
    message: str


@dataclass(frozen=True, slots=True)
class Execution:
    id: str
    event_id: str
    provider_id: str
    workflow_id: str
    workflow_version: int
    blob_id: str
    user_id: str
    priority: int
    input: Mapping[str, Any]
    steps: tuple[StepRecord, ...]
    status: ExecutionStatus = "pending"
    output: Any = None
    error: str | None = None
    created_at: datetime = field(default_factory=now)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    cancelled_at: datetime | None = None
    decisions: tuple[Decision, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=dict)
    # False while stored deltas still await their events on NATS.
    deltas_published: bool = False
    # Set by a cancel request, never by a checkpoint: whoever runs it next cancels it.
    cancel_requested: bool = False

    @property
    def progress(self) -> dict[str, int]:
        own = [s for s in self.steps if s.kind == "step"]
        done = sum(1 for s in own if s.status in SETTLED_STEPS or s.status == "cancelled")
        return {"completed": done, "total": len(own)}

    def step(self, step_id: str) -> StepRecord:
        for record in self.steps:
            if record.id == step_id and record.kind == "step":
                return record
        raise KeyError(step_id)

    def with_step(self, record: StepRecord) -> Execution:
        """This execution with `record` replacing the step of the same id and kind, or added."""
        steps = list(self.steps)
        for index, existing in enumerate(steps):
            if existing.id == record.id and existing.kind == record.kind:
                steps[index] = record
                return replace(self, steps=tuple(steps))
        return replace(self, steps=(*steps, record))

    def with_unsettled_steps(self, status: StepStatus) -> Execution:
        """This execution with every step that has not settled set to `status`."""
        steps = tuple(
            replace(s, status=status)
            if s.kind == "step" and s.status in ("pending", "running")
            else s
            for s in self.steps
        )
        return replace(self, steps=steps)


def to_document(execution: Execution) -> dict[str, Any]:
    """The MongoDB document of an execution, without lease and logs (the store owns those)."""
    return {
        "_id": execution.id,
        "event_id": execution.event_id,
        "provider_id": execution.provider_id,
        "workflow_id": execution.workflow_id,
        "workflow_version": execution.workflow_version,
        "blob_id": execution.blob_id,
        "user_id": execution.user_id,
        "priority": execution.priority,
        "input": dict(execution.input),
        **mutable_fields(execution),
        "created_at": execution.created_at,
        "cancel_requested": execution.cancel_requested,
    }


def mutable_fields(execution: Execution) -> dict[str, Any]:
    """The fields a checkpoint rewrites."""
    return {
        "status": execution.status,
        "output": execution.output,
        "error": execution.error,
        "started_at": execution.started_at,
        "completed_at": execution.completed_at,
        "cancelled_at": execution.cancelled_at,
        "steps": [_step_document(s) for s in execution.steps],
        "decisions": [
            {"step_id": d.step_id, "expression": d.expression, "result": d.result}
            for d in execution.decisions
        ],
        "vars": dict(execution.vars),
        "progress": execution.progress,
        "deltas_published": execution.deltas_published,
    }


def from_document(document: Mapping[str, Any]) -> Execution:
    return Execution(
        id=document["_id"],
        event_id=document["event_id"],
        provider_id=document["provider_id"],
        workflow_id=document["workflow_id"],
        workflow_version=document["workflow_version"],
        blob_id=document["blob_id"],
        user_id=document["user_id"],
        priority=document["priority"],
        input=document["input"],
        steps=tuple(StepRecord(**s) for s in document.get("steps", ())),
        status=document["status"],
        output=document.get("output"),
        error=document.get("error"),
        created_at=_as_utc(document["created_at"]),
        started_at=_utc(document.get("started_at")),
        completed_at=_utc(document.get("completed_at")),
        cancelled_at=_utc(document.get("cancelled_at")),
        decisions=tuple(Decision(**d) for d in document.get("decisions", ())),
        vars=document.get("vars") or {},
        deltas_published=document.get("deltas_published", False),
        cancel_requested=document.get("cancel_requested", False),
    )


def log_document(line: LogLine) -> dict[str, Any]:
    return {
        "timestamp": line.timestamp,
        "level": line.level,
        "step_id": line.step_id,
        "message": line.message,
    }


def log_from_document(document: Mapping[str, Any]) -> LogLine:
    level = cast(LogLevel, document["level"])
    return LogLine(
        _as_utc(document["timestamp"]), level, document.get("step_id"), document["message"]
    )


def _step_document(record: StepRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "kind": record.kind,
        "status": record.status,
        "attempts": record.attempts,
        "started_at": record.started_at,
        "completed_at": record.completed_at,
        "duration_ms": record.duration_ms,
        "request": dict(record.request) if record.request is not None else None,
        "output": record.output,
        "http_status": record.http_status,
        "error": record.error,
    }


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else _as_utc(value)


def _as_utc(value: datetime) -> datetime:
    # Clients configured without tz_aware hand back naive UTC datetimes.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
