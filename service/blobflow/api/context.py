"""What the API's handlers reach: one typed value under one `web.AppKey`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from blobflow.core.catalog import Catalog
from blobflow.metrics import Metrics
from blobflow.runtime.cancels import Canceller
from blobflow.runtime.submission import Submitter
from blobflow.store.definitions import DefinitionStore
from blobflow.store.executions import ExecutionStore
from blobflow.store.queries import Queries


@dataclass(frozen=True, slots=True)
class ApiContext:
    store: ExecutionStore
    queries: Queries
    definitions: DefinitionStore
    catalog: Callable[[], Catalog]
    submitter: Submitter
    canceller: Canceller
    metrics: Metrics
    # Reload here and tell the other replicas, after a registration changed something.
    announce: Callable[[], Awaitable[None]]


CONTEXT: web.AppKey[ApiContext] = web.AppKey("context", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
