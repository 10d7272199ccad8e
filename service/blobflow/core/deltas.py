"""Deltas: the changes to a blob that a workflow's output asks for (§8).

A delta draft is what the output says, before storage gives it an id, the
blob's next version and a timestamp. The output is checked as a whole, so a
workflow author sees every mistake at once rather than one per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blobflow.core.jsonvalues import kind
from blobflow.core.records import Execution, now
from blobflow.errors import DeltaError

MAX_DELTAS = 10_000
_OPERATION_KEYS = ("delta_operations", "deltas")


@dataclass(frozen=True, slots=True)
class DeltaDraft:
    type: str
    path: str
    new_value: Any
    old_value: Any


def derive_deltas(output: Any, old_content: Any = None) -> list[DeltaDraft]:
    """The deltas of one workflow output, in §8 order; raises DeltaError listing every problem."""
    if not isinstance(output, dict):
        return []
    lists = {key: output.get(key) for key in (*_OPERATION_KEYS, "created_blobs")}
    # Counted before any item is looked at, so a hostile output costs nothing.
    count = sum(len(v) for v in lists.values() if isinstance(v, list))
    count += int("transformed_content" in output)
    if count > MAX_DELTAS:
        raise DeltaError([f"output: {count} deltas, more than the limit of {MAX_DELTAS}"])

    drafts: list[DeltaDraft] = []
    problems: list[str] = []
    for key in _OPERATION_KEYS:
        for where, item in _items(key, lists[key], problems):
            draft = _operation(where, item, problems)
            if draft is not None:
                drafts.append(draft)
    if "transformed_content" in output:
        drafts.append(
            DeltaDraft("transform", "/content", output["transformed_content"], old_content)
        )
    for _, item in _items("created_blobs", lists["created_blobs"], problems):
        drafts.append(DeltaDraft("create_derived", "/derived", item, None))
    if problems:
        raise DeltaError(problems)
    return drafts


def _items(key: str, value: Any, problems: list[str]) -> list[tuple[str, Any]]:
    """`(where, item)` pairs of a list field; null is the same as absent."""
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"output.{key}: must be a list, not {_describe(value)}")
        return []
    return [(f"output.{key}[{i}]", item) for i, item in enumerate(value)]


def _operation(where: str, item: Any, problems: list[str]) -> DeltaDraft | None:
    if not isinstance(item, dict):
        problems.append(f"{where}: must be an object, not {_describe(item)}")
        return None
    # `op` wins over `type`; a null counts as absent, but a wrong `op` is not
    # quietly replaced by `type`, since the author meant the `op`.
    name = "op" if item.get("op") is not None else "type"
    delta_type = item.get(name)
    path = item.get("path")
    type_ok = isinstance(delta_type, str) and bool(delta_type)
    path_ok = path is None or isinstance(path, str)
    if not type_ok:
        got = "" if delta_type is None else f" ('{name}' is {_describe(delta_type)})"
        problems.append(f"{where}: needs a non-empty 'op' or 'type'{got}")
    if not path_ok:
        problems.append(f"{where}.path: must be a string, not {_describe(path)}")
    if not (type_ok and path_ok):
        return None
    return DeltaDraft(str(delta_type), path or "", item.get("value"), item.get("old_value"))


def _describe(value: Any) -> str:
    if isinstance(value, str) and not value:
        return "an empty string"
    found = kind(value)
    return (
        f"{'an' if found in ('array', 'object') else 'a'} {found}"
        if found
        else type(value).__name__
    )


def delta_document(execution: Execution, index: int, draft: DeltaDraft) -> dict[str, Any]:
    """A delta as stored, before storage gives it its version (`version` 0 until then)."""
    return {
        "_id": f"{execution.id}:{index}",
        "blob_id": execution.blob_id,
        "provider_id": execution.provider_id,
        "workflow_id": execution.workflow_id,
        "workflow_version": execution.workflow_version,
        "execution_id": execution.id,
        "event_id": execution.event_id,
        # Whose blob: the API shows a user only the deltas of its own executions.
        "user_id": execution.user_id,
        "type": draft.type,
        "path": draft.path,
        "new_value": draft.new_value,
        "old_value": draft.old_value,
        "version": 0,
        "timestamp": now(),
    }
