"""What the API's handlers reach: one typed value under one `web.AppKey`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from service.cancels import Canceller
from service.catalog import Catalog
from service.metrics import Metrics
from service.queries import Queries
from service.registry import DefinitionStore
from service.store import ExecutionStore
from service.submission import Submitter


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
