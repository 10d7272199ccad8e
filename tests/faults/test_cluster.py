"""A 3-node JetStream cluster with streams of 3 replicas loses its stream leader under load."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from pymongo.asynchronous.database import AsyncDatabase

from service.streams import ensure_streams
from tests.faults.checker import check, expected_keys, settle
from tests.faults.cluster import NatsCluster
from tests.faults.stack import STREAMS, Stack
from tests.servers import Downstream, MongoDeployment
from tests.support import eventually, example_catalog, script_studio

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]
Db = AsyncDatabase[dict[str, Any]]
CATALOG = example_catalog()
EVENTS = [
    {"event_id": f"evt-{n}", "blob_id": f"blob-{n % 10}", "user_id": "u", "content": f"T{n}."}
    for n in range(60)
]


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    cluster = NatsCluster(tmp_path / "cluster")
    try:
        await cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest_asyncio.fixture
async def client(cluster: NatsCluster) -> AsyncIterator[NatsClient]:
    connection = await nats.connect(
        cluster.url.split(","), reconnect_time_wait=0.5, max_reconnect_attempts=-1
    )
    try:
        yield connection
    finally:
        await connection.close()


async def publish_until_stored(client: NatsClient, payload: bytes) -> None:
    """What a producer must do: JetStream does not retry while a new leader is elected.
    The same `Nats-Msg-Id` on every try keeps a retry after a lost ack from duplicating."""
    js = client.jetstream()
    msg_id = hashlib.sha256(payload).hexdigest()
    for _ in range(60):
        try:
            await js.publish(
                STREAMS.created_subject, payload, timeout=2, headers={"Nats-Msg-Id": msg_id}
            )
            return
        except (NatsError, TimeoutError):
            await asyncio.sleep(0.5)
    raise AssertionError("the cluster never stored the event")


@pytest.mark.asyncio
async def test_losing_the_stream_leader_under_load(
    cluster: NatsCluster,
    client: NatsClient,
    mongodb: MongoDeployment,
    mongo_db_name: str,
    mongo_db: Db,
    downstream: Downstream,
    tmp_path: Path,
) -> None:
    script_studio(downstream)
    js = client.jetstream()
    # As the production notes say: the operator creates the streams with 3 replicas.
    await ensure_streams(js, STREAMS, replicas=3)
    async with Stack(cluster, mongodb, mongo_db_name, downstream.url, tmp_path) as stack:
        for _ in range(2):
            await stack.start()
        for data in EVENTS[:30]:
            await js.publish(STREAMS.created_subject, orjson.dumps(data))

        async def some_done() -> bool:
            return await mongo_db.executions.count_documents({"status": "completed"}) >= 10

        await eventually(some_done, timeout_s=60)
        leader = (await js.stream_info(STREAMS.blobs)).cluster
        assert leader is not None
        assert leader.leader is not None
        cluster.node(leader.leader).kill()
        killed_at = time.monotonic()
        for data in EVENTS[30:]:
            await publish_until_stored(client, orjson.dumps(data))
        await settle(mongo_db, js, len(expected_keys(CATALOG, EVENTS)), timeout_s=180)
        report = await check(mongo_db, js, CATALOG, EVENTS)
        new_leader = (await js.stream_info(STREAMS.blobs)).cluster
        print(
            f"\n{report}\nleader {leader.leader} killed; new leader "
            f"{new_leader.leader if new_leader else None}; quiet after "
            f"{time.monotonic() - killed_at:.1f} s"
        )
        assert report.problems == [], str(report)
        assert all(r.process.returncode is None for r in stack.replicas)
