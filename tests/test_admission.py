"""Admission: new executions run here while there is room, else wait parked in MongoDB;
parked and orphaned executions are claimed in batches, highest priority first."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.records import Execution
from blobflow.errors import UnstorableError
from blobflow.runtime.admission import Admission
from blobflow.runtime.dispatcher import Dispatcher
from blobflow.runtime.engine import Engine, new_execution
from blobflow.store.executions import ExecutionStore
from tests.memory import memory_engine
from tests.servers import Downstream, Reply
from tests.support import (
    binding_of,
    blob_event,
    catalog_with,
    engine_for,
    eventually,
    step,
    store_of,
)
from tests.unpublished import PickyPublisher, published, unpublished

Db = AsyncDatabase[dict[str, Any]]
CATALOG = catalog_with([step("a")])


def executions(priorities: list[int], prefix: str = "e") -> list[Execution]:
    binding = binding_of(CATALOG, "wf")
    return [
        new_execution(
            blob_event(f"{prefix}{index}", f"b{index}"),
            replace(binding, priority=priority),
            CATALOG.workflows["wf"],
        )
        for index, priority in enumerate(priorities)
    ]


async def stored_store(db: Db) -> ExecutionStore:
    store = ExecutionStore(db, lease_ms=15_000)
    await store.ensure_indexes()
    return store


@pytest.mark.asyncio
async def test_claims_take_the_highest_priority_first_and_the_oldest_within_one(
    mongo_db: Db,
) -> None:
    store = await stored_store(mongo_db)
    parked = executions([0, 5, 9, 5, 1, 9, 0])
    for execution in parked:  # one at a time: created_at orders them within a priority
        assert await store.park_many([execution]) == {execution.id}
    assert await store.park_many(parked) == set()  # a redelivered event parks nothing new

    first = (await store.claim_many("w1", 3)).leased
    rest = (await store.claim_many("w2", 10)).leased

    assert [(e.id, e.priority) for e, _ in first] == [
        (parked[2].id, 9),
        (parked[5].id, 9),
        (parked[1].id, 5),
    ]
    assert [e.priority for e, _ in rest] == [5, 1, 0, 0]
    assert {lease.owner for _, lease in first} == {"w1"}
    assert {lease.epoch for _, lease in first + rest} == {1}
    assert (await store.claim_many("w3", 10)).leased == []  # every lease is live now


@pytest.mark.asyncio
async def test_workers_claiming_at_once_never_take_the_same_execution(mongo_db: Db) -> None:
    store = await stored_store(mongo_db)
    await store.park_many(executions([1] * 12))

    batches = await asyncio.gather(*(store.claim_many(f"w{n}", 12) for n in range(3)))

    ids = [execution.id for batch in batches for execution, _ in batch.leased]
    assert all(batch.more for batch in batches)  # each saw a full set of candidates
    assert len(ids) == len(set(ids)) == 12


@pytest.mark.asyncio
async def test_claims_skip_live_leases_and_finished_executions(mongo_db: Db) -> None:
    store = await stored_store(mongo_db)
    live, done, orphaned = executions([9, 9, 1])
    await store.create_many([live, done], "w1")
    await mongo_db.executions.update_one({"_id": done.id}, {"$set": {"status": "completed"}})
    await store.create_many([orphaned], "gone")
    await mongo_db.executions.update_one({"_id": orphaned.id}, {"$set": {"lease.expires_ms": 0}})

    claimed = (await store.claim_many("w2", 10)).leased

    assert [(e.id, lease.epoch) for e, lease in claimed] == [(orphaned.id, 2)]


async def admission_for(engine: Engine, capacity: int) -> tuple[Admission, Dispatcher]:
    dispatcher = Dispatcher(engine, concurrency=1, lease_ms=15_000)
    admission = Admission(
        engine.store,
        dispatcher,
        None,
        worker_id=engine.worker_id,
        capacity=capacity,
        interval_s=60,
    )
    return admission, dispatcher


@pytest.mark.asyncio
async def test_new_executions_park_once_the_queue_is_full_and_queue_behind_parked_ones(
    mongo_db: Db, downstream: Downstream
) -> None:
    async with engine_for(CATALOG, mongo_db, downstream) as engine:
        admission, dispatcher = await admission_for(engine, capacity=2)
        batch = executions([0, 0, 0, 9])
        for execution in batch:
            assert await admission.admit([execution]) == 1
        assert dispatcher.backlog == 2
        owners = {d["_id"]: d["lease"]["owner"] async for d in mongo_db.executions.find({})}
        assert [owners[e.id] for e in batch] == [engine.worker_id] * 2 + [None] * 2
        # Room again, but parked work waits: a new one queues behind it.
        assert dispatcher.withdraw(batch[0].id) is not None
        assert admission.overflowing()
        assert await admission.admit(executions([0], prefix="late")) == 1
        assert dispatcher.backlog == 1
        assert await admission.take() == 1  # the one free place goes to priority 9
        queued = {lease.execution_id for lease in dispatcher.take_queued()}
        assert queued == {batch[1].id, batch[3].id}


@pytest.mark.asyncio
async def test_parked_work_runs_highest_priority_first(
    mongo_db: Db, downstream: Downstream
) -> None:
    downstream.script("POST", "/a", [Reply(200, json={}, delay_s=0.02)])
    async with engine_for(CATALOG, mongo_db, downstream) as engine:
        admission, dispatcher = await admission_for(engine, capacity=2)
        priorities = [0, 0, 3, 1, 9, 0, 7, 2]
        for execution in executions(priorities):
            await admission.admit([execution])

        async def all_done() -> bool:
            return await mongo_db.executions.count_documents({"status": "completed"}) == 8

        async with asyncio.TaskGroup() as group:
            running = [group.create_task(dispatcher.run()), group.create_task(admission.run())]
            await eventually(all_done, timeout_s=30)
            for task in running:
                task.cancel()

    ids = [r.headers["Idempotency-Key"].split(":")[0] for r in downstream.calls("POST", "/a")]
    by_id = {d["_id"]: d["priority"] async for d in mongo_db.executions.find({})}
    # The first two were queued here before anything was parked; then priority order.
    assert [by_id[i] for i in ids] == [0, 0, 9, 7, 3, 2, 1, 0]


@pytest.mark.asyncio
async def test_a_stopping_replica_parks_what_it_admits(
    mongo_db: Db, downstream: Downstream
) -> None:
    async with engine_for(CATALOG, mongo_db, downstream) as engine:
        admission, dispatcher = await admission_for(engine, capacity=10)
        dispatcher.close()
        assert await admission.admit(executions([5])) == 1
        assert dispatcher.backlog == 0
        record = await mongo_db.executions.find_one({})
        assert record is not None
        assert record["lease"]["owner"] is None


@pytest.mark.asyncio
async def test_intake_waits_once_a_replica_has_parked_its_share(
    mongo_db: Db, downstream: Downstream
) -> None:
    async with engine_for(CATALOG, mongo_db, downstream) as engine:
        admission, dispatcher = await admission_for(engine, capacity=1)
        admission.max_parked = 2
        await admission.admit(executions([0], prefix="queued"))  # fills the queue
        await admission.admit(executions([0, 0], prefix="parked"))
        waiting = asyncio.ensure_future(admission.room())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        dispatcher.take_queued()  # room again: a claim round takes the parked ones
        await admission.take()
        await asyncio.wait_for(waiting, 5)


class InsertCounter:
    def __init__(self, store: ExecutionStore) -> None:
        self.inserts = 0
        self.insert_many = store.executions.insert_many
        store.executions.insert_many = self  # type: ignore[method-assign]

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.inserts += 1
        return await self.insert_many(*args, **kwargs)


@pytest.mark.asyncio
async def test_events_admitted_at_once_share_one_insert(
    mongo_db: Db, downstream: Downstream
) -> None:
    async with engine_for(CATALOG, mongo_db, downstream) as engine:
        admission, dispatcher = await admission_for(engine, capacity=100)
        dispatcher.close()  # nothing runs: what is admitted stays parked
        first, second, third, repeated = executions([0, 0, 0, 0])
        counter = InsertCounter(store_of(engine))

        outcomes = await asyncio.gather(
            admission.admit([first]),
            admission.admit([second, third]),
            admission.admit([repeated]),
            admission.admit([repeated]),  # the same event handled twice at once
        )

        assert list(outcomes) == [1, 2, 1, 1]
        assert counter.inserts == 2  # the first alone, the rest together
        stored = {d["_id"] async for d in mongo_db.executions.find({})}
        assert stored == {first.id, second.id, third.id, repeated.id}


@pytest.mark.asyncio
async def test_an_unstorable_event_admitted_with_others_fails_alone(
    mongo_db: Db, downstream: Downstream
) -> None:
    async with engine_for(CATALOG, mongo_db, downstream) as engine:
        admission, dispatcher = await admission_for(engine, capacity=100)
        dispatcher.close()
        first, second = executions([0, 0])
        bad = replace(executions([0], prefix="bad")[0], input={"n": 2**70})
        counter = InsertCounter(store_of(engine))

        outcomes = await asyncio.gather(
            admission.admit([first]),
            admission.admit([second]),
            admission.admit([bad]),
            return_exceptions=True,
        )

        assert list(outcomes[:2]) == [1, 1]
        assert isinstance(outcomes[2], UnstorableError)
        assert counter.inserts == 1 + 1 + 2  # the batch failed: then each alone
        stored = {d["_id"] async for d in mongo_db.executions.find({})}
        assert stored == {first.id, second.id}


@pytest.mark.asyncio
async def test_republishing_goes_on_past_an_execution_that_cannot_be_published() -> None:
    store, ids = await unpublished(3)
    publisher = PickyPublisher()
    publisher.refused = {ids[0]}  # the oldest: it used to hold up every later one
    engine = memory_engine(CATALOG, store=store)
    dispatcher = Dispatcher(engine, concurrency=1, lease_ms=15_000)
    admission = Admission(
        store, dispatcher, publisher, worker_id=engine.worker_id, capacity=2, interval_s=0.02
    )
    running = asyncio.ensure_future(admission.run())
    try:

        async def later_ones_published() -> bool:
            return published(store) == {ids[1], ids[2]}

        await eventually(later_ones_published, timeout_s=5, interval_s=0.01)
        await asyncio.sleep(1)  # some 50 rounds
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    # Tried again with growing gaps, at most 8 rounds apart: not once a round.
    assert 3 <= publisher.attempts.count(ids[0]) <= 12
    assert published(store) == {ids[1], ids[2]}
