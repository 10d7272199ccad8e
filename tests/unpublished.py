"""Completed executions whose delta events NATS did not confirm, and a publisher that
refuses some executions' events: for the tests of republishing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.memory import (
    MemoryExecutionStore,
    MemoryPublisher,
    Reply,
    memory_engine,
    scripted_caller,
)
from tests.support import binding_of, blob_event, catalog_with, start, step

CATALOG = catalog_with([step("a")])


class PickyPublisher(MemoryPublisher):
    """Confirms every execution's events but those of `refused`; records each attempt."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: set[str] = set()
        self.unexpected: set[str] = set()
        self.attempts: list[str] = []

    async def publish(self, deltas: Sequence[Mapping[str, Any]]) -> bool:
        execution_id = str(deltas[0]["execution_id"])
        self.attempts.append(execution_id)
        if execution_id in self.unexpected:
            raise RuntimeError("a bug")
        if execution_id in self.refused:
            return False
        return await super().publish(deltas)


async def unpublished(count: int) -> tuple[MemoryExecutionStore, list[str]]:
    """A store with `count` completed executions whose delta events were not confirmed;
    their ids, oldest first."""
    store = MemoryExecutionStore()
    sink = MemoryPublisher()
    sink.confirm = False
    engine = memory_engine(CATALOG, store=store, sink=sink)
    reply = {"delta_operations": [{"op": "set", "path": "/x", "value": 1}]}
    scripted_caller(engine).script("POST", "/a", Reply(200, json=reply))
    ids: list[str] = []
    completed = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(count):
        execution = await start(engine, blob_event(f"evt-{n}", f"b{n}"), binding_of(CATALOG, "wf"))
        assert execution is not None
        assert execution.deltas_published is False
        # Completion order, unambiguous (the store keeps milliseconds).
        store.executions[execution.id]["completed_at"] = completed + timedelta(seconds=n)
        ids.append(execution.id)
    return store, ids


def published(store: MemoryExecutionStore) -> set[str]:
    """The executions whose delta events are all confirmed."""
    return {key for key, d in store.executions.items() if d["deltas_published"]}
