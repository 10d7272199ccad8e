"""The MongoDB store: round trips, gapless versions under concurrency, fencing, resume."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.records import LogLine, StepRecord, now
from blobflow.errors import LeaseLost, UnstorableError
from blobflow.runtime.engine import new_execution
from blobflow.store.executions import ExecutionStore
from tests.servers import Downstream, MongoDeployment, Reply
from tests.support import (
    CommandLog,
    binding_of,
    blob_event,
    catalog_with,
    engine_for,
    example_catalog,
    monitored_db,
    script_studio,
    start,
    step,
    stored_logs,
)

Db = AsyncDatabase[dict[str, Any]]
# The blob processing workflow has 4 steps; the budget is steps + 4.
ROUND_TRIPS_BLOB_PROCESSING = 8


@pytest_asyncio.fixture
async def monitored(
    mongodb: MongoDeployment, mongo_db_name: str
) -> AsyncIterator[tuple[Db, CommandLog]]:
    async with monitored_db(mongodb.url, mongo_db_name) as monitored:
        yield monitored


@pytest.mark.asyncio
async def test_round_trips_of_one_blob_processing_execution(
    monitored: tuple[Db, CommandLog], downstream: Downstream
) -> None:
    db, commands = monitored
    script_studio(downstream)
    catalog = example_catalog()
    async with engine_for(catalog, db, downstream) as engine:
        commands.names.clear()
        binding = binding_of(catalog, "blob_processing_workflow")
        execution = await start(engine, blob_event(), binding)

    assert execution is not None
    assert execution.status == "completed"
    # insert, 4 checkpoints, read the blob's latest version, insert deltas, finish.
    assert commands.names == [
        "insert",
        *["update"] * 4,
        "find",
        "insert",
        "update",
    ]
    assert len(commands.names) == ROUND_TRIPS_BLOB_PROCESSING


@pytest.mark.asyncio
async def test_steps_quicker_than_a_third_of_the_lease_cost_no_renewal(
    monitored: tuple[Db, CommandLog], downstream: Downstream
) -> None:
    db, commands = monitored
    downstream.script("POST", "/quick", [Reply(200, json={}, delay_s=0.1)])
    catalog = catalog_with([step(f"s{n}", "/quick") for n in range(6)])
    # A renewal would be due every 0.2 s; each step's checkpoint comes sooner.
    async with engine_for(catalog, db, downstream, lease_ms=600) as engine:
        commands.names.clear()
        execution = await start(engine, blob_event(), binding_of(catalog, "wf"))

    assert execution is not None
    assert execution.status == "completed"
    # insert, one checkpoint per step, the final write: no heartbeat among them.
    assert commands.names == ["insert", *["update"] * 6, "update"]


@pytest.mark.asyncio
async def test_concurrent_executions_on_one_blob_get_gapless_versions(
    mongo_db: Db, downstream: Downstream
) -> None:
    script_studio(downstream)
    catalog = example_catalog()
    binding = binding_of(catalog, "blob_processing_workflow")
    async with engine_for(catalog, mongo_db, downstream) as engine:
        runs = [start(engine, blob_event(f"evt-{i}", "same-blob"), binding) for i in range(6)]
        executions = await asyncio.gather(*runs)

    assert all(e is not None and e.status == "completed" for e in executions)
    deltas = [d async for d in mongo_db["deltas"].find({"blob_id": "same-blob"})]
    assert sorted(d["version"] for d in deltas) == list(range(1, 19))
    by_execution: dict[str, list[int]] = {}
    for delta in deltas:
        by_execution.setdefault(delta["execution_id"], []).append(delta["version"])
    assert len(by_execution) == 6


@pytest.mark.asyncio
async def test_a_stale_owner_cannot_write_after_a_takeover(
    mongo_db: Db, downstream: Downstream
) -> None:
    catalog = catalog_with([step("a")])
    store = ExecutionStore(mongo_db, lease_ms=50)
    await store.ensure_indexes()
    execution = new_execution(blob_event(), binding_of(catalog, "wf"), catalog.workflows["wf"])
    [stale] = await store.create_many([execution], "worker-a")
    assert stale is not None
    await asyncio.sleep(0.1)  # the lease expires on the server's clock

    claimed = await store.claim(execution.id, "worker-b")
    assert claimed is not None
    _, fresh = claimed
    assert fresh.epoch == stale.epoch + 1
    assert await store.claim(execution.id, "worker-c") is None  # b's lease is live

    with pytest.raises(LeaseLost):
        await store.checkpoint(stale, execution.with_step(StepRecord("a", status="completed")))
    await store.checkpoint(fresh, execution)


@pytest.mark.asyncio
async def test_resume_after_deltas_were_stored_does_not_duplicate_them(
    mongo_db: Db, downstream: Downstream
) -> None:
    script_studio(downstream)
    catalog = example_catalog()
    async with engine_for(catalog, mongo_db, downstream, lease_ms=50) as engine:
        first = await start(engine, blob_event(), binding_of(catalog, "blob_processing_workflow"))
        assert first is not None
        # As if the process died after storing deltas, before writing the end.
        await mongo_db["executions"].update_one(
            {"_id": first.id}, {"$set": {"status": "running", "lease.expires_ms": 0}}
        )
        calls = len(downstream.requests)
        resumed = await engine.resume(first.id)

    assert resumed is not None
    assert resumed.status == "completed"
    assert len(downstream.requests) == calls  # every step had completed: none called again
    assert await mongo_db["deltas"].count_documents({}) == 3
    versions = [d["version"] async for d in mongo_db["deltas"].find({})]
    assert sorted(versions) == [1, 2, 3]


@pytest.mark.asyncio
async def test_completed_executions_are_never_claimed(mongo_db: Db, downstream: Downstream) -> None:
    downstream.script("POST", "/a", [Reply(200, json={})])
    catalog = catalog_with([step("a")])
    async with engine_for(catalog, mongo_db, downstream, lease_ms=50) as engine:
        execution = await start(engine, blob_event(), binding_of(catalog, "wf"))
        assert execution is not None
        await asyncio.sleep(0.1)
        assert await engine.resume(execution.id) is None


@pytest.mark.asyncio
async def test_a_step_longer_than_the_lease_keeps_its_lease(
    mongo_db: Db, downstream: Downstream
) -> None:
    downstream.script("POST", "/slow", [Reply(200, json={}, delay_s=1.0)])
    catalog = catalog_with([step("slow")])
    async with engine_for(catalog, mongo_db, downstream, lease_ms=300) as engine:
        run = asyncio.ensure_future(start(engine, blob_event(), binding_of(catalog, "wf")))
        await downstream.wait_for_calls("POST", "/slow", count=1, timeout_s=5)
        execution_id = next(iter(engine.runs))
        await asyncio.sleep(0.6)  # twice the lease: only the heartbeat keeps it
        assert await engine.store.claim(execution_id, "thief") is None
        execution = await run

    assert execution is not None
    assert execution.status == "completed"


@pytest.mark.asyncio
async def test_a_worker_that_lost_its_lease_stops_without_compensating(
    mongo_db: Db, downstream: Downstream
) -> None:
    undo = {"service": "studio", "endpoint": "/undo"}
    downstream.script("POST", "/a", [Reply(200, json={})])
    downstream.script("POST", "/hang", [Reply(200, json={}, delay_s=1.0)])
    catalog = catalog_with([step("a", compensation=undo), step("hang")])
    async with engine_for(catalog, mongo_db, downstream, lease_ms=30_000) as engine:
        run = asyncio.ensure_future(start(engine, blob_event(), binding_of(catalog, "wf")))
        await downstream.wait_for_calls("POST", "/hang", count=1, timeout_s=5)
        execution_id = next(iter(engine.runs))
        # Another worker takes over (as if this one had been paused past its lease).
        await mongo_db["executions"].update_one(
            {"_id": execution_id}, {"$set": {"lease.owner": "other", "lease.epoch": 99}}
        )
        assert await run is None

    document = await mongo_db["executions"].find_one({"_id": execution_id})
    assert document is not None
    assert document["status"] == "running"
    assert [s["status"] for s in document["steps"]] == ["completed", "pending"]
    assert downstream.calls("POST", "/undo") == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "value", [2**70, "\ud800", {"a\x00b": 1}], ids=["integer", "lone-surrogate", "nul-in-key"]
)
async def test_new_executions_the_database_cannot_hold_are_unstorable(
    mongo_db: Db, value: Any
) -> None:
    store = ExecutionStore(mongo_db)
    await store.ensure_indexes()
    catalog = catalog_with([step("a")])
    execution = new_execution(blob_event(), binding_of(catalog, "wf"), catalog.workflows["wf"])
    bad = replace(execution, input={**execution.input, "x": value})
    with pytest.raises(UnstorableError):
        await store.create_many([bad], "w1")
    with pytest.raises(UnstorableError):
        await store.park_many([bad])
    assert await mongo_db["executions"].count_documents({}) == 0


@pytest.mark.asyncio
async def test_a_long_log_keeps_its_first_and_last_lines_and_says_how_many_went(
    mongo_db: Db,
) -> None:
    store = ExecutionStore(mongo_db, max_logs=10)
    await store.ensure_indexes()
    catalog = catalog_with([step("a")])
    execution = new_execution(blob_event(), binding_of(catalog, "wf"), catalog.workflows["wf"])
    [lease] = await store.create_many([execution], "w1")
    numbers = iter(range(1, 26))
    for size in (4, 8, 9, 4):  # 25 lines in four checkpoints
        lines = [LogLine(now(), "info", None, f"line {next(numbers)}") for _ in range(size)]
        assert await store.checkpoint(lease, execution, lines) is False

    messages = [line.message for line in await stored_logs(store, execution.id)]
    assert messages[:5] == [f"line {n}" for n in range(1, 6)]
    assert messages[5] == (
        "… 15 log lines dropped here: an execution keeps its first 5 and its last 5 lines"
    )
    assert messages[6:] == [f"line {n}" for n in range(21, 26)]
