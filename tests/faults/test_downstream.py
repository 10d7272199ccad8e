"""A burst of blob events against a downstream service with per-service limits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NatsClient
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.downstream.limits import BREAKER_FAILURES, BREAKER_OPEN_S
from tests.faults.checker import check, expected_keys, settle
from tests.faults.stack import STREAMS, Stack
from tests.servers import Downstream, RecordedRequest, Reply
from tests.support import example_catalog, script_studio

pytestmark = pytest.mark.timeout(300)
Db = AsyncDatabase[dict[str, Any]]
CATALOG = example_catalog()
EVENTS = [
    {"event_id": f"evt-{n}", "blob_id": f"blob-{n % 10}", "user_id": "u", "content": f"T{n}."}
    for n in range(40)
]
SLOW_S = 0.2


def most_at_once(starts: list[float], duration_s: float) -> int:
    """The most requests in flight at one moment, each taking `duration_s` from its start.

    A request held back by a limit starts only after an earlier one has ended, so
    this never counts more than were really in flight.
    """
    ends = sorted(start + duration_s for start in starts)
    most = current = 0
    ending = 0
    for start in sorted(starts):
        while ends[ending] <= start:
            ending += 1
            current -= 1
        current += 1
        most = max(most, current)
    return most


@pytest.mark.parametrize(
    ("starts", "expected"),
    [([], 0), ([0.0], 1), ([0.0, 0.1, 0.2], 2), ([0.0, 0.2, 0.4], 1), ([0.0] * 5, 5)],
)
def test_most_at_once(starts: list[float], expected: int) -> None:
    assert most_at_once(starts, 0.2) == expected


@pytest.mark.parametrize("limit", [1, None])
@pytest.mark.asyncio
async def test_a_burst_stays_within_the_service_limit(
    stack: Stack, downstream: Downstream, nats_client: NatsClient, mongo_db: Db, limit: int | None
) -> None:
    script_studio(downstream)
    downstream.script("POST", "/blobs/validate", [Reply(200, json={"valid": True}, delay_s=SLOW_S)])
    if limit is not None:
        stack.env = {"BLOBFLOW_SERVICE_STUDIO_MAX_CONCURRENCY": str(limit)}
    for _ in range(2):
        await stack.start()
    js = nats_client.jetstream()
    for data in EVENTS:
        await js.publish(STREAMS.created_subject, orjson.dumps(data))
    await settle(mongo_db, js, len(expected_keys(CATALOG, EVENTS)))
    report = await check(mongo_db, js, CATALOG, EVENTS)
    starts = [r.received_at for r in downstream.calls("POST", "/blobs/validate")]
    most = most_at_once(starts, SLOW_S)
    print(f"\n{report}\nat most {most} validate requests at once (limit {limit} per replica)")
    assert report.problems == [], str(report)
    if limit is None:
        assert most > 2  # without the limit the burst goes through at once
    else:
        assert most <= 2 * limit  # per replica


@pytest.mark.asyncio
async def test_a_step_three_times_longer_than_ack_wait_is_not_redelivered(
    stack: Stack, downstream: Downstream, nats_client: NatsClient, mongo_db: Db
) -> None:
    ack_wait_s = 2
    script_studio(downstream)
    triggered = Reply(200, json={"triggered": ["p1"]}, delay_s=3 * ack_wait_s)
    downstream.script("POST", "/providers/trigger", [triggered])
    stack.env = {"BLOBFLOW_ACK_WAIT_S": str(ack_wait_s)}
    for _ in range(2):
        await stack.start()
    events = EVENTS[:4]
    js = nats_client.jetstream()
    for data in events:
        await js.publish(STREAMS.created_subject, orjson.dumps(data))
    consumer = await js.consumer_info(STREAMS.blobs, STREAMS.consumer)
    assert consumer.config.ack_wait == ack_wait_s
    await settle(mongo_db, js, len(events))
    report = await check(mongo_db, js, CATALOG, events)
    calls = downstream.calls("POST", "/providers/trigger")
    print(f"\n{report}\n{len(calls)} calls of {3 * ack_wait_s} s each with AckWait {ack_wait_s} s")
    assert report.problems == [], str(report)
    # Acked once its executions were stored: nothing is redelivered or run twice.
    assert report.redelivered == 0
    assert len(calls) == len(events)


@pytest.mark.asyncio
async def test_a_service_that_is_down_meets_an_open_breaker_and_is_probed_again(
    stack: Stack, downstream: Downstream, nats_client: NatsClient, mongo_db: Db
) -> None:
    script_studio(downstream)
    down_s = 6.0
    down_until = time.monotonic() + 3600.0  # set once the first events are out

    def validate(_request: RecordedRequest) -> Reply:
        if time.monotonic() < down_until:
            return Reply(503, json={"error": "down"})
        return Reply(200, json={"valid": True})

    downstream.script("POST", "/blobs/validate", validate)
    # Requests already in flight when the breaker opens still reach the service;
    # one at a time per replica makes the count exact.
    stack.env = {"BLOBFLOW_SERVICE_STUDIO_MAX_CONCURRENCY": "1"}
    for _ in range(2):
        await stack.start()
    js = nats_client.jetstream()
    during, after = EVENTS[:30], EVENTS[30:]
    down_until = time.monotonic() + down_s
    for data in during:
        await js.publish(STREAMS.created_subject, orjson.dumps(data))
    await settle(mongo_db, js, len(during))
    reached = len(downstream.calls("POST", "/blobs/validate"))
    # Once the breaker's 10 s are over, the next call is the probe; it closes it.
    await asyncio.sleep(max(0.0, down_until + BREAKER_OPEN_S - time.monotonic()))
    for data in after:
        await js.publish(STREAMS.created_subject, orjson.dumps(data))
    await settle(mongo_db, js, len(EVENTS))
    report = await check(mongo_db, js, CATALOG, EVENTS)
    print(
        f"\n{report}\nwhile the service was down, {reached} requests reached it for "
        f"{len(during)} executions of 2 attempts each; after {BREAKER_OPEN_S:.0f} s a probe "
        f"closed the breaker and the next {len(after)} executions ran"
    )
    assert report.problems == [], str(report)
    # Per replica: 5 failures in a row open its breaker; the rest fail at once.
    assert reached <= 2 * BREAKER_FAILURES
    failed = await mongo_db.executions.count_documents({"status": "failed"})
    assert failed == len(during)
    assert report.terminal["completed"] == len(after)
