"""A backend goes away under load and comes back: nothing is lost or done twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol

import orjson
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from pymongo.asynchronous.database import AsyncDatabase

from tests.faults.checker import check, expected_keys, settle
from tests.faults.stack import STREAMS, Stack
from tests.servers import Downstream, MongoDeployment, NatsServer, Reply
from tests.support import eventually, example_catalog, script_studio

pytestmark = pytest.mark.timeout(300)
Db = AsyncDatabase[dict[str, Any]]
CATALOG = example_catalog()
EVENTS = [
    {"event_id": f"evt-{n}", "blob_id": f"blob-{n % 10}", "user_id": "u", "content": f"T{n}."}
    for n in range(60)
]
MONGODB_DOWN_S = 5.0
# Long enough for every replica to exhaust its publish timeouts and fall back on
# republishing from MongoDB.
NATS_DOWN_S = 30.0
# Six times the client's 10 s operation timeout, and 20 times the lease: on waking,
# the server's clock has moved on and every lease has expired at once.
MONGODB_HUNG_S = 60.0


@pytest_asyncio.fixture
async def stack(stack: Stack, downstream: Downstream) -> AsyncIterator[Stack]:
    """Two replicas against a well-behaved downstream."""
    script_studio(downstream)
    for _ in range(2):
        await stack.start()
    yield stack


async def publish(nats_client: NatsClient) -> None:
    js = nats_client.jetstream()
    for data in EVENTS:
        await js.publish(STREAMS.created_subject, orjson.dumps(data))


async def completed(db: Db, count: int) -> None:
    async def enough() -> bool:
        return await db.executions.count_documents({"status": "completed"}) >= count

    await eventually(enough, timeout_s=60)


class Server(Protocol):
    def kill(self) -> None: ...
    def start(self) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...


async def killed(server: Server, down_s: float) -> None:
    server.kill()
    await asyncio.sleep(down_s)
    await asyncio.to_thread(server.start)


async def hung(server: Server, hung_s: float) -> None:
    server.pause()  # hung, not refusing: calls wait until their timeout
    try:
        await asyncio.sleep(hung_s)
    finally:
        server.resume()


async def survives(
    stack: Stack, nats_client: NatsClient, db: Db, outage: Awaitable[None], what: str
) -> None:
    """Load, the outage once 10 executions completed, then the checker."""
    await publish(nats_client)
    await completed(db, 10)
    await outage
    back_at = time.monotonic()
    js = nats_client.jetstream()
    await settle(db, js, len(expected_keys(CATALOG, EVENTS)), timeout_s=180)
    report = await check(db, js, CATALOG, EVENTS)
    print(f"\n{report}\nsettled {time.monotonic() - back_at:.1f} s after {what}")
    assert report.problems == [], str(report)
    assert all(r.process.returncode is None for r in stack.replicas)


@pytest.mark.asyncio
async def test_mongodb_killed_and_restarted_under_load(
    stack: Stack, mongodb: MongoDeployment, nats_client: NatsClient, mongo_db: Db
) -> None:
    await survives(
        stack, nats_client, mongo_db, killed(mongodb, MONGODB_DOWN_S), "MongoDB came back"
    )


@pytest.mark.asyncio
async def test_nats_killed_under_load_and_restarted_30_s_later(
    stack: Stack, nats_server: NatsServer, nats_client: NatsClient, mongo_db: Db
) -> None:
    unpublished: list[int] = []

    async def down() -> None:
        nats_server.kill()
        await asyncio.sleep(NATS_DOWN_S)
        # Runs went on meanwhile: their deltas are stored, their delta events not.
        unpublished.append(await mongo_db.executions.count_documents({"deltas_published": False}))
        await asyncio.to_thread(nats_server.start)

    await survives(stack, nats_client, mongo_db, down(), "NATS came back")
    print(f"{unpublished[0]} executions completed with unpublished deltas while NATS was down")
    assert unpublished[0] > 0


@pytest.mark.asyncio
async def test_mongodb_hung_for_60_s_under_load(
    stack: Stack, mongodb: MongoDeployment, nats_client: NatsClient, mongo_db: Db
) -> None:
    await survives(
        stack, nats_client, mongo_db, hung(mongodb, MONGODB_HUNG_S), "MongoDB answered again"
    )


@pytest.mark.asyncio
async def test_a_downstream_failing_half_the_time(
    stack: Stack, downstream: Downstream, nats_client: NatsClient, mongo_db: Db
) -> None:
    flaky = [Reply(503, json={"error": "busy"}), Reply(200, json={"content_type": "text/plain"})]
    downstream.script("POST", "/blobs/metadata", flaky * 100)
    await publish(nats_client)
    js = nats_client.jetstream()
    await settle(mongo_db, js, len(expected_keys(CATALOG, EVENTS)))
    report = await check(mongo_db, js, CATALOG, EVENTS)
    print(f"\n{report}")
    assert report.problems == [], str(report)


@pytest.mark.asyncio
async def test_deltas_stored_while_nats_is_down_are_published_by_another_replica(
    stack: Stack,
    downstream: Downstream,
    nats_server: NatsServer,
    nats_client: NatsClient,
    mongo_db: Db,
) -> None:
    # The last step answers late: NATS goes down while the runs are in it.
    generated = {
        "delta_operations": [{"op": "set", "path": "/metadata/checked", "value": True}],
        "created_blobs": [{"id": "derived-1", "type": "summary"}],
    }
    slow = Reply(200, json=generated, delay_s=2)
    downstream.script("POST", "/deltas/generate", [slow])
    events = EVENTS[:10]
    js = nats_client.jetstream()
    for data in events:
        await js.publish(STREAMS.created_subject, orjson.dumps(data))
    await downstream.wait_for_calls("POST", "/deltas/generate", count=10, timeout_s=60)
    nats_server.kill()

    async def stored() -> bool:
        return await mongo_db.executions.count_documents({"status": "completed"}) == 10

    await eventually(stored, timeout_s=60)
    unpublished = await mongo_db.executions.count_documents({"deltas_published": False})
    for replica in stack.replicas:
        replica.kill()  # no replica that stored them survives to publish them
    await asyncio.to_thread(nats_server.start)
    await stack.start()
    back_at = time.monotonic()
    await settle(mongo_db, js, len(expected_keys(CATALOG, events)), timeout_s=120)
    report = await check(mongo_db, js, CATALOG, events)
    print(
        f"\n{report}\n{unpublished} executions had unpublished deltas; "
        f"published {time.monotonic() - back_at:.1f} s after a new replica started"
    )
    assert unpublished == 10
    assert report.problems == [], str(report)
