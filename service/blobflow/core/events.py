"""Blob events (§3): decoding and checking one event, with a reason when it is bad.

The reason codes are what the dead-letter stream and the metrics report, so
they are stable names, not prose.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from blobflow.core.jsonvalues import loads
from blobflow.core.storable import unstorable_reason
from blobflow.core.triggers import EventKind
from blobflow.errors import EventError

MAX_EVENT_BYTES: Final = 1024 * 1024
MAX_ID_CHARS: Final = 200
_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
SUBJECT_KINDS: Final[Mapping[str, EventKind]] = {
    "blobs.created": "onCreate",
    "blobs.updated": "onUpdate",
}


@dataclass(frozen=True, slots=True)
class BlobEvent:
    """A checked blob event; `data` keeps every field, unknown ones included."""

    kind: EventKind
    data: Mapping[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.data["event_id"])

    @property
    def blob_id(self) -> str:
        return str(self.data["blob_id"])

    @property
    def user_id(self) -> str:
        return str(self.data["user_id"])


def decode_event(
    payload: bytes,
    subject: str | None = None,
    max_bytes: int = MAX_EVENT_BYTES,
    kinds: Mapping[str, EventKind] = SUBJECT_KINDS,
) -> BlobEvent:
    """Decode raw message bytes into a checked event; `kinds` maps subjects to event kinds."""
    if len(payload) > max_bytes:
        raise EventError("too_large", f"{len(payload)} bytes, the limit is {max_bytes}")
    try:
        data = loads(payload)
    except ValueError as exc:
        raise EventError("invalid_json", str(exc)) from None
    subject_kind = kinds.get(subject) if subject else None
    return check_event(data, subject_kind)


def check_event(data: Any, subject_kind: EventKind | None = None) -> BlobEvent:
    """Check decoded JSON against §3; the kind comes from `event` or the subject."""
    if not isinstance(data, dict):
        raise EventError("not_an_object", f"expected a JSON object, got {_kind_name(data)}")
    for name in ("event_id", "blob_id", "user_id"):
        if name not in data:
            raise EventError("missing_field", f"{name} is required")
        value = data[name]
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_CHARS:
            detail = f"{name} must be text of 1 to {MAX_ID_CHARS} characters"
            raise EventError("invalid_field", detail)
    kind = _kind(data.get("event"), subject_kind)
    _check_optional(data)
    problem = unstorable_reason(data)
    if problem is not None:
        # Valid JSON that the database cannot hold: retrying cannot help.
        raise EventError("unstorable", problem)
    return BlobEvent(kind, {**data, "metadata": data.get("metadata") or {}})


def _kind(declared: Any, subject_kind: EventKind | None) -> EventKind:
    if declared is None:
        if subject_kind is None:
            raise EventError("missing_field", "event is required when the subject does not say")
        return subject_kind
    if declared not in ("onCreate", "onUpdate"):
        raise EventError("invalid_field", "event must be onCreate or onUpdate")
    if subject_kind is not None and declared != subject_kind:
        raise EventError("event_mismatch", f"event {declared} on a {subject_kind} subject")
    kind: EventKind = declared
    return kind


def _check_optional(data: dict[str, Any]) -> None:
    provider_ids = data.get("provider_ids")
    if provider_ids is not None and not (
        isinstance(provider_ids, list) and all(isinstance(p, str) for p in provider_ids)
    ):
        raise EventError("invalid_field", "provider_ids must be a list of provider ids")
    if data.get("metadata") is not None and not isinstance(data["metadata"], dict):
        raise EventError("invalid_field", "metadata must be an object")
    previous = data.get("previous")
    if previous is not None and not isinstance(previous, dict):
        raise EventError("invalid_field", "previous must be an object {metadata, content}")
    occurred_at = data.get("occurred_at")
    if occurred_at is not None and not _is_rfc3339(occurred_at):
        raise EventError("invalid_field", "occurred_at must be an RFC 3339 timestamp")


def _is_rfc3339(value: Any) -> bool:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value.upper())  # checks ranges: month 13, day 32, …
    except ValueError:
        return False
    return True


def _kind_name(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"
