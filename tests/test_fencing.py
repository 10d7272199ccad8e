"""Fenced writes: concurrent checkpoints leave as one command; each learns its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.leases import Lease
from blobflow.core.records import Execution, LogLine, StepRecord, now
from blobflow.errors import LeaseLost, UnstorableError
from blobflow.runtime.engine import new_execution
from blobflow.store.executions import ExecutionStore
from tests.servers import MongoDeployment
from tests.support import (
    CommandLog,
    binding_of,
    blob_event,
    catalog_with,
    monitored_db,
    step,
    stored_logs,
)

Db = AsyncDatabase[dict[str, Any]]


@pytest_asyncio.fixture
async def monitored(
    mongodb: MongoDeployment, mongo_db_name: str
) -> AsyncIterator[tuple[ExecutionStore, CommandLog]]:
    async with monitored_db(mongodb.url, mongo_db_name) as (db, commands):
        store = ExecutionStore(db)
        await store.ensure_indexes()
        yield store, commands


async def _running(store: ExecutionStore, count: int) -> list[tuple[Execution, Lease]]:
    catalog = catalog_with([step("a")])
    binding = binding_of(catalog, "wf")
    executions = [
        new_execution(blob_event(f"evt-{n}"), binding, catalog.workflows["wf"])
        for n in range(count)
    ]
    leases = await store.create_many(executions, owner="w")
    return list(zip(executions, leases, strict=True))


def _done(execution: Execution, **output: Any) -> Execution:
    return execution.with_step(StepRecord("a", status="completed", attempts=1, output=output))


def _line(text: str) -> list[LogLine]:
    return [LogLine(now(), "info", "a", text)]


async def _logs(store: ExecutionStore, execution: Execution) -> list[str]:
    return [line.message for line in await stored_logs(store, execution.id)]


@pytest.mark.asyncio
async def test_checkpoints_that_wait_for_a_write_in_flight_share_the_next_command(
    monitored: tuple[ExecutionStore, CommandLog],
) -> None:
    store, commands = monitored
    running = await _running(store, 8)
    commands.names.clear()

    outcomes = await asyncio.gather(
        *(store.checkpoint(lease, _done(e), _line("step done")) for e, lease in running)
    )

    assert outcomes == [False] * 8
    # The first leaves alone; the seven that queued behind it leave together.
    assert commands.names == ["update", "update"]
    for execution, _ in running:
        stored = await store.get(execution.id)
        assert stored is not None
        assert stored.step("a").status == "completed"
        assert await _logs(store, execution) == ["step done"]


@pytest.mark.asyncio
async def test_a_batch_with_misses_gives_each_write_its_own_outcome_and_applies_none_twice(
    monitored: tuple[ExecutionStore, CommandLog],
) -> None:
    store, _ = monitored
    (lead, lead_lease), (ok, ok_lease), (asked, asked_lease), (lost, lost_lease) = await _running(
        store, 4
    )
    assert await store.request_cancel(asked.id)
    await store.executions.update_one({"_id": lost.id}, {"$set": {"lease.epoch": 2}})

    outcomes = await asyncio.gather(
        store.checkpoint(lead_lease, _done(lead), _line("lead")),
        store.checkpoint(ok_lease, _done(ok), _line("ok")),
        store.checkpoint(asked_lease, _done(asked), _line("asked")),
        store.checkpoint(lost_lease, _done(lost), _line("lost")),
        return_exceptions=True,
    )

    assert list(outcomes[:3]) == [False, False, True]  # True: a cancel was requested
    assert isinstance(outcomes[3], LeaseLost)
    assert await _logs(store, ok) == ["ok"]
    assert await _logs(store, asked) == ["asked"]  # written, and the run told to stop
    assert await _logs(store, lost) == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "output",
    [{"n": 2**70}, {"s": "\ud800"}, {"a\x00b": 1}],
    ids=["integer-beyond-64-bits", "lone-surrogate", "nul-in-key"],
)
async def test_an_unstorable_checkpoint_fails_alone(
    monitored: tuple[ExecutionStore, CommandLog], output: dict[str, Any]
) -> None:
    store, _ = monitored
    (lead, lead_lease), (ok, ok_lease), (huge, huge_lease) = await _running(store, 3)

    outcomes = await asyncio.gather(
        store.checkpoint(lead_lease, _done(lead), _line("lead")),
        store.checkpoint(ok_lease, _done(ok), _line("ok")),
        store.checkpoint(huge_lease, _done(huge, **output), _line("huge")),
        return_exceptions=True,
    )

    assert list(outcomes[:2]) == [False, False]
    assert isinstance(outcomes[2], UnstorableError)
    assert await _logs(store, ok) == ["ok"]
    stored = await store.get(huge.id)
    assert stored is not None
    assert stored.step("a").status == "pending"  # untouched


@pytest.mark.asyncio
async def test_two_checkpoints_of_one_execution_in_a_batch_land_in_order(
    monitored: tuple[ExecutionStore, CommandLog],
) -> None:
    store, _ = monitored
    (lead, lead_lease), (twice, twice_lease) = await _running(store, 2)

    outcomes = await asyncio.gather(
        store.checkpoint(lead_lease, _done(lead), _line("lead")),
        store.checkpoint(twice_lease, _done(twice, n=1), _line("first")),
        store.checkpoint(twice_lease, _done(twice, n=2), _line("second")),
    )

    assert list(outcomes) == [False, False, False]
    stored = await store.get(twice.id)
    assert stored is not None
    assert stored.step("a").output == {"n": 2}  # the later write is the one that stays
    assert await _logs(store, twice) == ["first", "second"]
