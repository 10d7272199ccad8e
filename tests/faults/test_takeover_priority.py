"""A backlog of pending executions of mixed priority, taken over by one replica with
little concurrency: higher priorities start first (measured as inverted pairs).

Last in the suite (by file name): SecantusDB stays slower after this much data,
which would slow the cases after it.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.records import now, to_document
from blobflow.runtime.engine import new_execution
from blobflow.store.executions import ExecutionStore
from tests.faults.checker import inverted_share, settle
from tests.faults.stack import Stack
from tests.servers import Downstream
from tests.support import binding_of, blob_event, example_catalog, script_studio

pytestmark = pytest.mark.timeout(900)
Db = AsyncDatabase[dict[str, Any]]
BACKLOG = 500


@pytest.mark.parametrize(
    ("rows", "share"),
    [
        ([(2, 0.0), (1, 1.0), (0, 2.0)], 0.0),
        ([(0, 0.0), (1, 1.0), (2, 2.0)], 1.0),
        ([(1, 0.0), (1, 1.0)], 0.0),
        ([(2, 0.0), (0, 1.0), (1, 2.0)], 1 / 3),
    ],
)
def test_inverted_share(rows: list[tuple[int, float]], share: float) -> None:
    assert inverted_share(rows) == pytest.approx(share)


@pytest.mark.asyncio
async def test_higher_priority_starts_first_under_a_backlog(
    stack: Stack, downstream: Downstream, nats_client: NatsClient, mongo_db: Db
) -> None:
    script_studio(downstream)
    catalog = example_catalog()
    binding = binding_of(catalog, "blob_processing_workflow")
    workflow = catalog.workflows["blob_processing_workflow"]
    store = ExecutionStore(mongo_db)
    await store.ensure_indexes()
    chooser = random.Random(7)
    # Left behind by a replica that died: pending, their leases long expired.
    documents = []
    for number in range(BACKLOG):
        event = blob_event(f"evt-{number}", f"blob-{number % 10}")
        execution = replace(new_execution(event, binding, workflow), priority=chooser.randrange(10))
        document = {**to_document(execution), "logs": []}
        document["lease"] = {"owner": "gone", "epoch": 1, "expires_ms": 0}
        documents.append(document)
    await mongo_db.executions.insert_many(documents)
    stack.env = {"BLOBFLOW_MAX_CONCURRENCY": "4"}
    started = now()
    await stack.start()
    await settle(mongo_db, nats_client.jetstream(), BACKLOG, timeout_s=700)
    completed = await mongo_db.executions.count_documents({"status": "completed"})
    assert completed == BACKLOG
    rows = [
        (d["priority"], d["started_at"].timestamp())
        async for d in mongo_db.executions.find({}, {"priority": True, "started_at": True})
    ]
    share = inverted_share(rows)
    elapsed_s = (now() - started).total_seconds()
    print(
        f"\n{completed} of {BACKLOG} completed in {elapsed_s:.1f} s; "
        f"{share:.1%} of differently prioritised pairs started out of order"
    )
    assert share < 0.05
