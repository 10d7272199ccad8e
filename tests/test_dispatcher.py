"""The dispatcher: priority order under a backlog, bounded concurrency, isolation."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.events import check_event
from blobflow.core.leases import Lease
from blobflow.runtime.dispatcher import Dispatcher
from blobflow.runtime.engine import new_execution
from tests.servers import Downstream, Reply
from tests.support import binding_of, catalog_with, engine_for, step

Db = AsyncDatabase[dict[str, Any]]


@pytest.mark.asyncio
async def test_a_backlog_runs_highest_priority_first_within_the_concurrency_bound(
    mongo_db: Db, downstream: Downstream
) -> None:
    downstream.script("POST", "/a", [Reply(200, json={}, delay_s=0.05)])
    catalog = catalog_with([step("a")])
    binding = binding_of(catalog, "wf")
    async with engine_for(catalog, mongo_db, downstream) as engine:
        executions = []
        for index, priority in enumerate([0, 5, 1, 9, 5, 3, 7, 0]):
            event = check_event(
                {"event_id": f"e{index}", "blob_id": f"b{index}", "user_id": "u"}, "onCreate"
            )
            prioritised = replace(binding, priority=priority)
            executions.append(new_execution(event, prioritised, catalog.workflows["wf"]))
        leases = await engine.store.create_many(executions, engine.worker_id)
        dispatcher = Dispatcher(engine, concurrency=2, lease_ms=15_000)
        dispatcher.submit(list(zip(executions, leases, strict=True)))
        assert dispatcher.backlog == 8

        runner = asyncio.ensure_future(dispatcher.run())
        await dispatcher.wait_for_room(1)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    order = [
        (await mongo_db["executions"].find_one({"_id": r.headers["Idempotency-Key"].split(":")[0]}))
        for r in downstream.calls("POST", "/a")
    ]
    priorities = [document["priority"] for document in order if document]
    assert sorted(priorities, reverse=True) == [9, 7, 5, 5, 3, 1, 0, 0]
    # Two run at once, so neighbours may swap; nothing is overtaken from further back.
    assert all(priorities[i] >= priorities[i + 2] for i in range(len(priorities) - 2))
    statuses = {d["status"] async for d in mongo_db["executions"].find({})}
    assert statuses == {"completed"}


@pytest.mark.asyncio
async def test_a_queued_execution_claimed_again_here_keeps_the_newer_lease(
    mongo_db: Db, downstream: Downstream
) -> None:
    catalog = catalog_with([step("a")])
    async with engine_for(catalog, mongo_db, downstream) as engine:
        event = check_event({"event_id": "e", "blob_id": "b", "user_id": "u"}, "onCreate")
        execution = new_execution(event, binding_of(catalog, "wf"), catalog.workflows["wf"])
        dispatcher = Dispatcher(engine, concurrency=1, lease_ms=15_000)
        old = Lease(execution.id, engine.worker_id, 1)
        dispatcher.submit([(execution, old)])
        dispatcher.submit([(execution, replace(old, epoch=2))])
        dispatcher.submit([(execution, old)])  # an older one changes nothing
        assert dispatcher.backlog == 1
        assert dispatcher.take_queued() == [replace(old, epoch=2)]
