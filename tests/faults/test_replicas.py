"""Several replicas: sharing the work, taking over from a killed one, fencing a frozen one."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NatsClient
from pymongo.asynchronous.database import AsyncDatabase

from tests.faults.checker import check, expected_keys, settle
from tests.faults.stack import STREAMS, Replica, Stack
from tests.servers import Downstream, Reply
from tests.support import eventually, example_catalog, script_studio

pytestmark = pytest.mark.timeout(300)
Db = AsyncDatabase[dict[str, Any]]
CATALOG = example_catalog()


def event(number: int, blobs: int = 20) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event_id": f"evt-{number}",
        "blob_id": f"blob-{number % blobs}",
        "user_id": "user-1",
        "content": f"Text {number}.",
    }
    if number % 4 == 0:  # a chapter: two providers' workflows on one blob
        data["metadata"] = {"type": "chapter", "chapter_number": number}
    return data


async def publish(nats_client: NatsClient, events: list[dict[str, Any]]) -> None:
    js = nats_client.jetstream()
    for data in events:
        await js.publish(STREAMS.created_subject, orjson.dumps(data))


async def hanging_execution(
    stack: Stack, downstream: Downstream, nats_client: NatsClient, db: Db
) -> tuple[str, Replica]:
    """Two replicas, one event, its third step hanging: the execution and its owner."""
    script_studio(downstream)
    ok = Reply(200, json={"triggered": ["p1"]})
    downstream.script("POST", "/providers/trigger", [Reply(hang=True), ok])
    for _ in range(2):
        await stack.start()
    await publish(nats_client, [event(1)])
    hanging = (await downstream.wait_for_calls("POST", "/providers/trigger", timeout_s=20))[0]
    execution_id = hanging.headers["Idempotency-Key"].partition(":")[0]
    return execution_id, await owner_of(stack, db, execution_id)


async def owner_of(stack: Stack, db: Db, execution_id: str) -> Replica:
    """The replica holding the execution's lease (its worker id is in its start line)."""
    document = await db.executions.find_one({"_id": execution_id}, {"lease": True})
    assert document is not None
    owners = [r for r in stack.replicas if f"worker {document['lease']['owner']}" in r.log()]
    assert len(owners) == 1, [r.name for r in owners]
    return owners[0]


@pytest.mark.asyncio
async def test_three_replicas_share_200_events_over_20_blobs(
    stack: Stack, downstream: Downstream, nats_client: NatsClient, mongo_db: Db
) -> None:
    script_studio(downstream)
    for _ in range(3):
        await stack.start()
    events = [event(n) for n in range(200)]
    started = time.monotonic()
    await publish(nats_client, events)
    js = nats_client.jetstream()
    expected = len(expected_keys(CATALOG, events))
    await settle(mongo_db, js, expected, timeout_s=300)
    elapsed_s = time.monotonic() - started
    report = await check(mongo_db, js, CATALOG, events)
    assert report.problems == [], str(report)
    assert report.terminal == Counter({"completed": expected})
    owners = Counter(
        [d["lease"]["owner"] async for d in mongo_db.executions.find({}, {"lease": True})]
    )
    print(f"\n{report}\n{elapsed_s:.1f} s; executions per replica: {sorted(owners.values())}")
    assert len(owners) == 3, owners


@pytest.mark.asyncio
async def test_a_killed_replica_is_taken_over_at_the_step_it_was_in(
    stack: Stack, downstream: Downstream, nats_client: NatsClient, mongo_db: Db
) -> None:
    execution_id, doomed = await hanging_execution(stack, downstream, nats_client, mongo_db)
    events = [event(1)]
    doomed.kill()
    killed_at = time.monotonic()
    js = nats_client.jetstream()
    await settle(mongo_db, js, 1)
    recovered_s = time.monotonic() - killed_at
    report = await check(mongo_db, js, CATALOG, events)
    assert report.problems == [], str(report)
    assert report.terminal == Counter({"completed": 1})
    # The completed steps were not called again; the interrupted one was, with its key.
    assert len(downstream.calls("POST", "/blobs/validate")) == 1
    assert len(downstream.calls("POST", "/blobs/metadata")) == 1
    keys = [r.headers["Idempotency-Key"] for r in downstream.calls("POST", "/providers/trigger")]
    assert keys == [f"{execution_id}:trigger_providers"] * 2
    print(f"\n{report}\nrecovered {recovered_s:.1f} s after SIGKILL (lease 3 s)")
    assert recovered_s < 15


@pytest.mark.asyncio
async def test_a_frozen_replica_that_wakes_after_a_takeover_writes_nothing(
    stack: Stack, downstream: Downstream, nats_client: NatsClient, mongo_db: Db
) -> None:
    execution_id, frozen = await hanging_execution(stack, downstream, nats_client, mongo_db)
    events = [event(1)]
    frozen.pause()
    js = nats_client.jetstream()
    try:
        await settle(mongo_db, js, 1)
        before = await mongo_db.executions.find_one({"_id": execution_id})
        assert before is not None
        assert before["status"] == "completed"
    finally:
        frozen.resume()

    async def noticed() -> bool:
        return "lost the lease" in frozen.log()

    await eventually(noticed, timeout_s=20)
    await asyncio.sleep(1)  # room for any write the stale replica might still try
    after = await mongo_db.executions.find_one({"_id": execution_id})
    assert after == before
    report = await check(mongo_db, js, CATALOG, events)
    assert report.problems == [], str(report)
    assert report.deltas == 3


@pytest.mark.asyncio
async def test_a_replica_stopped_mid_load_hands_its_work_back(
    stack: Stack, downstream: Downstream, nats_client: NatsClient, mongo_db: Db
) -> None:
    script_studio(downstream)
    for _ in range(3):
        await stack.start()
    events = [event(n, blobs=10) for n in range(80)]
    await publish(nats_client, events)

    async def some_done() -> bool:
        return await mongo_db.executions.count_documents({"status": "completed"}) >= 10

    await eventually(some_done, timeout_s=60)
    exit_code = await stack.replicas[0].stop()
    js = nats_client.jetstream()
    await settle(mongo_db, js, len(expected_keys(CATALOG, events)))
    report = await check(mongo_db, js, CATALOG, events)
    print(f"\n{report}\nthe stopped replica exited with {exit_code}")
    assert exit_code == 0
    assert report.problems == [], str(report)


@pytest.mark.asyncio
async def test_poison_messages_among_good_ones_are_dead_lettered_and_block_nothing(
    stack: Stack, downstream: Downstream, nats_client: NatsClient, mongo_db: Db
) -> None:
    script_studio(downstream)
    for _ in range(2):
        await stack.start()
    events = [event(n, blobs=10) for n in range(40)]
    poison = [
        b"not json",
        b"\xff\xfe",
        b"[]",
        orjson.dumps({"event_id": "no-blob", "user_id": "u"}),
        orjson.dumps({"event_id": "e\x00", "blob_id": "b", "user_id": "u"}),
        b'{"event_id": "huge", "blob_id": "b", "user_id": "u", "n": 1' + b"0" * 30 + b"}",
        orjson.dumps({"event_id": "dots", "blob_id": "a.b *>", "user_id": "u", "$where": 1}),
    ]
    js = nats_client.jetstream()
    for index, data in enumerate(events):
        await js.publish(STREAMS.created_subject, orjson.dumps(data))
        if index % 6 == 0 and poison:
            await js.publish(STREAMS.created_subject, poison.pop())
    assert poison == []
    await settle(mongo_db, js, len(expected_keys(CATALOG, events)) + 2)
    # Odd but valid: a NUL inside a string, dots and wildcards in an id, a `$` key.
    accepted = [
        *events,
        {"event_id": "e\x00", "blob_id": "b", "user_id": "u"},
        {"event_id": "dots", "blob_id": "a.b *>", "user_id": "u", "$where": 1},
    ]
    report = await check(mongo_db, js, CATALOG, accepted)
    dead = (await js.stream_info(STREAMS.dlq)).state.messages
    print(f"\n{report}\n{dead} dead letters")
    assert report.problems == [], str(report)
    assert dead == 5
