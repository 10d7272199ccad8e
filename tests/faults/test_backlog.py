"""Backlogs: 10,000 queued events in bounded memory, and priority across a backlog.

A replica takes the stream's backlog in as parked executions in MongoDB (see
`blobflow.runtime.admission`) and runs them from there. On the MongoDB-wire test
server working off all 10,000 takes many minutes and slows every later case
(`make bench-backlog` does it, on a stack of its own): here the replica works
for a minute while memory, tasks and messages in hand are sampled; then what it
has not started is discarded (the stream purged, parked executions deleted) and
what it did is checked as usual.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.messaging.streams import ensure_streams
from tests.faults.checker import check, expected_keys, inverted_share, settle
from tests.faults.stack import STREAMS, Replica, Stack
from tests.servers import Downstream
from tests.support import eventually, example_catalog, script_studio

pytestmark = pytest.mark.timeout(300)
Db = AsyncDatabase[dict[str, Any]]
CATALOG = example_catalog()
BACKLOG = 10_000
WATCH_S = 60.0
CONCURRENCY = 16
MAX_BATCH = 32
EVENTS = [
    {"event_id": f"evt-{n}", "blob_id": f"blob-{n % 100}", "user_id": "u", "content": f"T{n}."}
    for n in range(BACKLOG)
]


async def publish_all(js: JetStreamContext) -> None:
    for start in range(0, len(EVENTS), 500):
        chunk = EVENTS[start : start + 500]
        await asyncio.gather(
            *(js.publish(STREAMS.created_subject, orjson.dumps(data)) for data in chunk)
        )


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (the peak so far) from /proc."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


async def gauges(http: aiohttp.ClientSession, replica: Replica) -> dict[str, float]:
    async with http.get(f"{replica.url}/metrics") as response:
        text = await response.text()
    wanted = ("blobflow_asyncio_tasks", "blobflow_backlog_executions")
    return {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if name in wanted
    }


@pytest.mark.asyncio
async def test_a_backlog_of_10000_events_keeps_memory_and_tasks_bounded(
    stack: Stack, downstream: Downstream, nats_client: NatsClient, mongo_db: Db
) -> None:
    script_studio(downstream)
    js = nats_client.jetstream()
    await ensure_streams(js, STREAMS)  # published before any replica runs
    await publish_all(js)
    assert (await js.stream_info(STREAMS.blobs)).state.messages == BACKLOG
    replica = await stack.start(env={"BLOBFLOW_MAX_CONCURRENCY": str(CONCURRENCY)})
    started = time.monotonic()
    rss_kib: list[int] = []
    tasks: list[float] = []
    backlog: list[float] = []
    in_hand: list[int] = []
    async with aiohttp.ClientSession() as http:
        while time.monotonic() - started < WATCH_S:
            rss_kib.append(memory_kib(replica.pid)["VmRSS"])
            sampled = await gauges(http, replica)
            tasks.append(sampled["blobflow_asyncio_tasks"])
            backlog.append(sampled["blobflow_backlog_executions"])
            consumer = await js.consumer_info(STREAMS.blobs, STREAMS.consumer)
            in_hand.append(consumer.num_ack_pending)
            await asyncio.sleep(0.5)
        peak_kib = memory_kib(replica.pid)["VmHWM"]
        completed = await mongo_db.executions.count_documents({"status": "completed"})
        left_in_stream = (await js.consumer_info(STREAMS.blobs, STREAMS.consumer)).num_pending
        await js.purge_stream(STREAMS.blobs)
        parked = {"status": "pending", "lease.owner": None}
        discarded = (await mongo_db.executions.delete_many(parked)).deleted_count

        async def idle() -> bool:
            unfinished = {"status": {"$in": ["pending", "running"]}}
            queued = (await gauges(http, replica))["blobflow_backlog_executions"]
            return queued == 0 and await mongo_db.executions.count_documents(unfinished) == 0

        await eventually(idle, timeout_s=120)
    taken = {d["event_id"] async for d in mongo_db.executions.find({}, {"event_id": True})}
    events = [data for data in EVENTS if data["event_id"] in taken]
    await settle(mongo_db, js, len(events))
    report = await check(mongo_db, js, CATALOG, events)
    # Memory once warmed up (10 s in) against the end: flat, not growing with work done.
    warm_kib = rss_kib[len(rss_kib) // 6]
    print(
        f"\n{report}\n{BACKLOG} events queued; in {WATCH_S:.0f} s {completed} executions "
        f"completed, {BACKLOG - left_in_stream} events taken in, {discarded} parked "
        f"executions discarded after; RSS {rss_kib[0] / 1024:.0f} MiB at start, "
        f"{warm_kib / 1024:.0f} MiB "
        f"warm, {rss_kib[-1] / 1024:.0f} MiB at the end, peak {peak_kib / 1024:.0f} MiB; "
        f"at most {max(tasks):.0f} tasks, {max(backlog):.0f} executions queued or running, "
        f"{max(in_hand)} messages in hand"
    )
    assert report.problems == [], str(report)
    assert completed > 0
    # Intake fetches no more once 4 x concurrency are queued or running; the
    # batch in hand when that is reached can add up to 32 (the largest batch).
    assert max(backlog) <= 4 * CONCURRENCY + MAX_BATCH
    assert max(in_hand) <= 8 * CONCURRENCY  # the consumer's MaxAckPending
    # Tasks, counted with asyncio.all_tasks() under load: per running execution its
    # worker, its heartbeat and a call raced against its cancel token (2); one per
    # message in hand; and PyMongo's async driver runs two per operation in flight
    # (a read and a cancellation poll), at most one per message, two per execution
    # (its write and its heartbeat's). Set by configuration, not by the backlog.
    bound = 4 * CONCURRENCY + MAX_BATCH + 2 * (MAX_BATCH + 2 * CONCURRENCY) + 30
    assert max(tasks) <= bound
    assert rss_kib[-1] - warm_kib < 32 * 1024
    assert peak_kib < 300 * 1024


@pytest.mark.asyncio
async def test_higher_priority_starts_first_when_the_backlog_is_still_in_nats(
    stack: Stack, downstream: Downstream, nats_client: NatsClient, mongo_db: Db
) -> None:
    script_studio(downstream)
    js = nats_client.jetstream()
    await ensure_streams(js, STREAMS)
    # 200 plain events (priority 0), then 100 chapters: each runs a priority 10 workflow
    # (book-writer) besides the priority 0 one. The urgent work is at the back of the stream.
    events: list[dict[str, Any]] = [
        {"event_id": f"evt-{n}", "blob_id": f"blob-{n % 20}", "user_id": "u", "content": "T."}
        for n in range(300)
    ]
    for data in events[200:]:
        data["metadata"] = {"type": "chapter", "chapter_number": 1}
    for data in events:
        await js.publish(STREAMS.created_subject, orjson.dumps(data))
    started = time.monotonic()
    await stack.start(env={"BLOBFLOW_MAX_CONCURRENCY": "4"})
    expected = expected_keys(CATALOG, events)
    await settle(mongo_db, js, len(expected), timeout_s=240)
    report = await check(mongo_db, js, CATALOG, events)
    assert report.problems == [], str(report)
    rows = [
        (d["priority"], d["started_at"].timestamp())
        async for d in mongo_db.executions.find({}, {"priority": True, "started_at": True})
    ]
    share = inverted_share(rows)
    urgent = sorted(started_at for priority, started_at in rows if priority == 10)
    plain = sorted(started_at for priority, started_at in rows if priority == 0)
    print(
        f"\n{report}\n{time.monotonic() - started:.1f} s; {share:.1%} of differently "
        f"prioritised pairs started out of order; the last priority 10 execution started "
        f"before {sum(s > urgent[-1] for s in plain)} of {len(plain)} priority 0 ones"
    )
    # Taken in stream order, the 200 plain executions would all start before any
    # priority 10 one: 20,000 of the 30,000 pairs (67%) out of order. Those started
    # before intake reached the chapters are out of order whatever is done.
    assert share < 0.25
