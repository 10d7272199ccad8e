"""Shared helpers for engine tests: catalogs, events, a scripted studio service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.catalog import Catalog, build_catalog
from blobflow.core.events import BlobEvent, check_event
from blobflow.core.records import Execution, LogLine, log_from_document
from blobflow.core.sources import SourceDocument, read_paths
from blobflow.core.triggers import Binding
from blobflow.downstream.http_caller import ServiceClients
from blobflow.runtime.engine import Engine, new_execution
from blobflow.store.executions import ExecutionStore
from blobflow.store.queries import Queries
from tests.servers import Downstream, Reply

ROOT = Path(__file__).resolve().parent.parent


def example_catalog() -> Catalog:
    documents, problems = read_paths([ROOT])
    assert problems == []
    return build_catalog(documents)


def step(step_id: str, endpoint: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "service": "studio", "endpoint": endpoint or f"/{step_id}", **fields}


def catalog_with(
    steps: list[dict[str, Any]], extra: Sequence[SourceDocument] = (), **workflow: Any
) -> Catalog:
    """A catalog of one workflow `wf` bound by provider `p` to every onCreate event."""
    data = {"id": "wf", "provider_id": "p", "name": "Test workflow", "steps": steps, **workflow}
    provider = {
        "provider": {"id": "p", "name": "Test provider"},
        "workflows": [{"workflow_id": "wf", "triggers": [{"event": "onCreate"}]}],
    }
    return build_catalog(
        [
            *extra,
            SourceDocument("workflow", "wf.yaml", data),
            SourceDocument("provider", "p.yaml", provider),
        ]
    )


def blob_event(event_id: str = "evt-1", blob_id: str = "blob-1", **fields: Any) -> BlobEvent:
    data = {"event_id": event_id, "blob_id": blob_id, "user_id": "user-1", **fields}
    return check_event(data, "onCreate")


def binding_of(catalog: Catalog, workflow_id: str) -> Binding:
    return next(b for b in catalog.bindings if b.workflow_id == workflow_id)


def script_studio(downstream: Downstream) -> None:
    """Plausible answers for every endpoint the example workflows call."""
    downstream.script("POST", "/blobs/validate", [Reply(200, json={"valid": True})])
    downstream.script(
        "POST", "/blobs/metadata", [Reply(200, json={"content_type": "text/plain", "size": 42})]
    )
    downstream.script("POST", "/providers/trigger", [Reply(200, json={"triggered": ["p1"]})])
    downstream.script("POST", "/providers/rollback", [Reply(200, json={"rolled_back": True})])
    downstream.script(
        "POST",
        "/deltas/generate",
        [
            Reply(
                200,
                json={
                    "delta_operations": [
                        {"op": "set", "path": "/metadata/checked", "value": True},
                        {"op": "set", "path": "/metadata/size", "value": 42, "old_value": 40},
                    ],
                    "created_blobs": [{"id": "derived-1", "type": "summary"}],
                },
            )
        ],
    )
    downstream.script(
        "GET",
        "/blobs/{blob_id}",
        [Reply(200, json={"content": "It rained.", "metadata": {"chapter_number": 7}})],
    )
    downstream.script(
        "POST", "/generate", [Reply(200, json={"text": "It rained hard.", "word_count": 3})]
    )
    downstream.script("POST", "/consistency/check", [Reply(200, json={"score": 0.9})])
    downstream.script(
        "POST",
        "/blobs",
        [Reply(200, json={"id": "expanded-1", "deltas": [{"op": "link", "path": "/children"}]})],
    )


@asynccontextmanager
async def engine_for(
    catalog: Catalog,
    db: AsyncDatabase[dict[str, Any]],
    downstream: Downstream,
    *,
    lease_ms: int = 15_000,
    worker_id: str | None = None,
) -> AsyncIterator[Engine]:
    store = ExecutionStore(db, lease_ms=lease_ms)
    await store.ensure_indexes()
    urls = {"STUDIO": downstream.url, "CORE": downstream.url}
    async with ServiceClients(urls) as clients:
        yield Engine(catalog, store, clients, worker_id=worker_id)


async def start(engine: Engine, event: BlobEvent, binding: Binding) -> Execution | None:
    """Run `binding` for `event` as admission and the dispatcher do: stored leased to
    this worker, then run; None when it existed already."""
    workflow = engine.catalog.workflows[binding.workflow_id]
    version = engine.catalog.version("workflow", workflow.id)
    execution = new_execution(event, binding, workflow, version)
    leases = await engine.store.create_many([execution], engine.worker_id)
    if not leases:
        return None
    return await engine.run_leased(execution, leases[0])


async def stored_logs(store: ExecutionStore, execution_id: str) -> list[LogLine]:
    """An execution's log lines as the API reads them (`Queries.execution_logs`)."""
    found = await Queries(store.executions.database).execution_logs(execution_id)
    return [] if found is None else [log_from_document(line) for line in found.lines]


def store_of(engine: Engine) -> ExecutionStore:
    """The MongoDB store behind an engine of `engine_for`."""
    assert isinstance(engine.store, ExecutionStore)
    return engine.store


class CommandLog(monitoring.CommandListener):
    """Records the name of every command a client sends: round trips, counted."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@asynccontextmanager
async def monitored_db(
    url: str, name: str
) -> AsyncIterator[tuple[AsyncDatabase[dict[str, Any]], CommandLog]]:
    """A database on a client of its own whose commands are logged."""
    commands = CommandLog()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        url, timeoutMS=10_000, event_listeners=[commands]
    )
    try:
        yield client[name], commands
    finally:
        await client.close()


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float = 30, interval_s: float = 0.05
) -> None:
    """Wait until `check()` holds; fail with a clear message after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached within {timeout_s} s")
        await asyncio.sleep(interval_s)
