"""What the API's handlers reach: one typed value under one `web.AppKey`.

The API sees the database only through the Protocols below; `blobflow.app`
passes in the MongoDB adapters (`blobflow.store`), tests may pass others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from blobflow.core.bundles import ItemResult
from blobflow.core.catalog import Catalog
from blobflow.core.definitions import Kind
from blobflow.core.listings import ExecutionLogs, Page
from blobflow.core.records import Execution
from blobflow.core.sources import SourceDocument
from blobflow.metrics import Metrics
from blobflow.runtime.cancellation import Canceller
from blobflow.runtime.submission import Submitter

Document = dict[str, Any]


class Executions(Protocol):
    async def get(self, execution_id: str) -> Execution | None: ...


class Queries(Protocol):
    """What the API lists, each an indexed read."""

    async def executions_page(
        self, filters: Mapping[str, str], *, limit: int, offset: int
    ) -> Page: ...

    async def claim_blob(self, blob_id: str, user_id: str) -> bool:
        """Whether `user_id` may run by hand on `blob_id`; the first user of a new blob
        id gets it, atomically."""
        ...

    async def pending_manual_runs(self, user_id: str) -> int: ...

    async def execution_logs(self, execution_id: str) -> ExecutionLogs | None: ...

    async def blob_deltas(
        self, blob_id: str, *, user_id: str | None, limit: int, offset: int
    ) -> Page: ...


class Definitions(Protocol):
    """The registry: registering bundles, and every version of each item."""

    async def register(self, documents: Sequence[SourceDocument]) -> list[ItemResult]: ...

    async def versions(self, kind: Kind, item_id: str) -> list[Document]: ...

    async def document(self, kind: Kind, item_id: str, version: int) -> Document | None: ...


@dataclass(frozen=True, slots=True)
class ApiContext:
    store: Executions
    queries: Queries
    definitions: Definitions
    catalog: Callable[[], Catalog]
    submitter: Submitter
    canceller: Canceller
    metrics: Metrics
    # Reload here and tell the other replicas, after a registration changed something.
    announce: Callable[[], Awaitable[None]]
    # Why the latest registered definitions do not load (the last good are in use), if so.
    definitions_problem: Callable[[], str | None] = lambda: None


CONTEXT: web.AppKey[ApiContext] = web.AppKey("context", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
