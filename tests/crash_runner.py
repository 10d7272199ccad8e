"""Runs one execution in a separate process, so a test can kill it mid-step.

python -m tests.crash_runner MONGODB_URL DATABASE SERVICE_URL LEASE_MS
"""

from __future__ import annotations

import asyncio
import sys

from pymongo import AsyncMongoClient

from blobflow.downstream.http_caller import ServiceClients
from blobflow.runtime.engine import Engine
from blobflow.store.executions import ExecutionStore
from tests.support import binding_of, blob_event, catalog_with, start, step

STEPS = [step(name) for name in ("one", "two", "three", "four")]


async def main(mongodb_url: str, database: str, service_url: str, lease_ms: int) -> None:
    catalog = catalog_with(STEPS, output_map={"delta_operations": "$.steps.four.output.ops"})
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_url, timeoutMS=10_000)
    store = ExecutionStore(client[database], lease_ms=lease_ms)
    await store.ensure_indexes()
    async with ServiceClients({"STUDIO": service_url}) as clients:
        engine = Engine(catalog, store, clients, worker_id="doomed")
        await start(engine, blob_event(), binding_of(catalog, "wf"))


if __name__ == "__main__":
    url, db, service, lease = sys.argv[1:5]
    asyncio.run(main(url, db, service, int(lease)))
