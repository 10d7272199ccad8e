"""The test servers work: real NATS JetStream, SecantusDB and the scripted downstream.

Also pins the MongoDB behaviours blobflow's design rests on, so a server that lacks
one fails here, by name, rather than somewhere deep in an integration test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from nats.aio.client import Client as NatsClient
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from tests.servers import (
    Downstream,
    ExternalMongo,
    MongoServer,
    NatsServer,
    RecordedRequest,
    Reply,
    UnsupportedOperation,
    redirect_to,
)

Db = AsyncDatabase[dict[str, Any]]


# -- NATS -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_jetstream_publish_fetch_ack(nats_client: NatsClient, stream_prefix: str) -> None:
    js = nats_client.jetstream()
    stream = f"{stream_prefix}_BLOBS"
    await js.add_stream(name=stream, subjects=[f"{stream_prefix}.blobs.*"])

    ack = await js.publish(f"{stream_prefix}.blobs.created", b'{"blob_id": "b-1"}')
    subscription = await js.pull_subscribe(f"{stream_prefix}.blobs.*", durable="worker")
    [message] = await subscription.fetch(1, timeout=5)
    await message.ack_sync()

    assert ack.stream == stream
    assert message.data == b'{"blob_id": "b-1"}'
    info = await js.consumer_info(stream, "worker")
    assert (info.num_ack_pending, info.num_pending) == (0, 0)


@pytest.mark.asyncio
async def test_nats_crash_and_restart_keeps_stream_data(
    nats_server: NatsServer, stream_prefix: str
) -> None:
    stream, subject = f"{stream_prefix}_KEEP", f"{stream_prefix}.keep"
    client = await nats.connect(nats_server.url)
    try:
        await client.jetstream().add_stream(name=stream, subjects=[subject])
        await client.jetstream().publish(subject, b"survives")
    finally:
        await client.close()
    port = nats_server.port

    nats_server.kill()
    assert not nats_server.running
    nats_server.start()

    assert nats_server.port == port
    client = await nats.connect(nats_server.url)
    try:
        message = await client.jetstream().get_last_msg(stream, subject)
    finally:
        await client.close()
    assert message.data == b"survives"


@pytest.mark.asyncio
async def test_paused_server_accepts_connections_but_never_answers(
    nats_server: NatsServer,
) -> None:
    async def greeting() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", nats_server.port)
        try:
            async with asyncio.timeout(0.3):
                return await reader.readline()
        finally:
            writer.close()

    with nats_server.paused(), pytest.raises(TimeoutError):
        await greeting()

    assert (await greeting()).startswith(b"INFO ")


# -- MongoDB ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_mongo_insert_and_find(mongo_db: Db) -> None:
    await mongo_db.items.insert_one({"_id": "a", "n": 1})

    assert await mongo_db.items.find_one({"_id": "a"}) == {"_id": "a", "n": 1}


@pytest.mark.asyncio
async def test_mongo_unique_indexes_reject_duplicates(mongo_db: Db) -> None:
    deltas = mongo_db.deltas
    await deltas.create_index([("blob_id", 1), ("version", 1)], unique=True)
    await deltas.insert_one({"_id": "e1:0", "blob_id": "b", "version": 1})

    with pytest.raises(DuplicateKeyError):
        await deltas.insert_one({"_id": "e2:0", "blob_id": "b", "version": 1})
    with pytest.raises(BulkWriteError) as caught:
        await deltas.insert_many(
            [
                {"_id": "e1:0", "blob_id": "b", "version": 9},
                {"_id": "e3:0", "blob_id": "b", "version": 2},
            ],
            ordered=False,
        )

    errors = caught.value.details["writeErrors"]
    assert [(e["index"], e["code"]) for e in errors] == [(0, 11000)]
    assert caught.value.details["nInserted"] == 1
    assert await deltas.count_documents({}) == 2


@pytest.mark.asyncio
async def test_mongo_lease_on_server_clock(mongo_db: Db) -> None:
    # A lease as blobflow takes one: upsert, pipeline update, expiry from $$NOW.
    # Compare instants as $toLong: SecantusDB answers false/0 when a stored date is
    # compared with $$NOW directly (an aware/naive datetime mix inside the server).
    leases = mongo_db.leases
    take = [
        {
            "$set": {
                "owner": "w1",
                "fence": {"$add": [{"$ifNull": ["$fence", 0]}, 1]},
                "expires_at": {"$add": ["$$NOW", 30_000]},
            }
        }
    ]
    lease = await leases.find_one_and_update(
        {"_id": "x"}, take, upsert=True, return_document=ReturnDocument.AFTER
    )
    assert lease is not None
    assert (lease["owner"], lease["fence"]) == ("w1", 1)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert abs(lease["expires_at"] - (now + dt.timedelta(seconds=30))) < dt.timedelta(seconds=10)

    expired = {"$expr": {"$lt": [{"$toLong": "$expires_at"}, {"$toLong": "$$NOW"}]}}
    steal = {"$set": {"owner": "w2"}, "$inc": {"fence": 1}}
    assert await leases.find_one_and_update({"_id": "x", **expired}, steal) is None
    await leases.update_one({"_id": "x"}, {"$set": {"expires_at": dt.datetime(2000, 1, 1)}})
    stolen = await leases.find_one_and_update(
        {"_id": "x", **expired}, steal, return_document=ReturnDocument.AFTER
    )
    assert stolen is not None
    assert (stolen["owner"], stolen["fence"]) == ("w2", 2)


def test_mongo_sigkill_keeps_acknowledged_writes(tmp_path: Path) -> None:
    # Its own server: killing the shared one would disturb nothing, but this way the
    # test also runs when BLOBFLOW_TEST_MONGODB_URL points elsewhere.
    with MongoServer(tmp_path) as server:
        server.start()
        server.sync_client().blobflow.items.insert_one({"_id": "acked"})
        server.restart(kill=True)

        assert server.sync_client().blobflow.items.find_one({"_id": "acked"}) == {"_id": "acked"}


def test_external_mongo_refuses_lifecycle_operations() -> None:
    external = ExternalMongo("mongodb://127.0.0.1:1/")
    with pytest.raises(UnsupportedOperation, match="BLOBFLOW_TEST_MONGODB_URL"):
        external.kill()
    external.ensure_running()


# -- downstream -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_downstream_replays_script_then_repeats_last(downstream: Downstream) -> None:
    downstream.script(
        "POST",
        "/blobs/validate",
        [Reply(503), Reply(503, headers={"Retry-After": "1"}), Reply(200, json={"valid": True})],
    )

    async with aiohttp.ClientSession() as http:
        answers = []
        for _ in range(4):
            async with http.post(f"{downstream.url}/blobs/validate", json={}) as response:
                answers.append(
                    (response.status, response.headers.get("Retry-After"), await response.read())
                )

    assert answers == [
        (503, None, b""),
        (503, "1", b""),
        (200, None, b'{"valid": true}'),
        (200, None, b'{"valid": true}'),
    ]
    assert len(downstream.calls("POST", "/blobs/validate")) == 4


@pytest.mark.asyncio
async def test_downstream_records_method_path_query_headers_and_json(
    downstream: Downstream,
) -> None:
    downstream.script("PUT", "/items/{item_id}", Reply(204))

    async with (
        aiohttp.ClientSession() as http,
        http.put(
            f"{downstream.url}/items/a%2Fb",
            params={"dry": "1"},
            json={"title": "Noir"},
            headers={"Idempotency-Key": "exec-1:step-1"},
        ) as response,
    ):
        assert response.status == 204

    [call] = downstream.calls("PUT", "/items/{item_id}")
    assert (call.method, call.path, call.query) == ("PUT", "/items/a%2Fb", {"dry": "1"})
    assert call.path_params == {"item_id": "a/b"}
    assert call.headers["idempotency-key"] == "exec-1:step-1"
    assert call.json == {"title": "Noir"}
    assert call.route == "/items/{item_id}"
    assert await call.finished() == "answered"


@pytest.mark.asyncio
async def test_downstream_answers_unscripted_routes_404(downstream: Downstream) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{downstream.url}/nope") as response:
        assert response.status == 404
        assert (await response.json())["error"] == "unscripted"

    assert [(c.method, c.path, c.route) for c in downstream.requests] == [("GET", "/nope", None)]


@pytest.mark.asyncio
async def test_downstream_reply_can_depend_on_request(downstream: Downstream) -> None:
    def echo(request: RecordedRequest) -> Reply:
        return Reply(200, json={"blob_id": request.path_params["blob_id"]})

    downstream.script("GET", "/blobs/{blob_id}", echo)
    downstream.script("GET", "/blobs/special", Reply(200, json="special"))

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{downstream.url}/blobs/b-7") as response:
            assert await response.json() == {"blob_id": "b-7"}
        async with http.get(f"{downstream.url}/blobs/special") as response:
            # The literal pattern beats the placeholder one.
            assert await response.json() == "special"


@pytest.mark.asyncio
async def test_downstream_delays_a_reply(downstream: Downstream) -> None:
    downstream.script("GET", "/slow", Reply(200, json={}, delay_s=0.3))

    started = time.monotonic()
    async with aiohttp.ClientSession() as http, http.get(f"{downstream.url}/slow") as response:
        assert response.status == 200

    assert time.monotonic() - started >= 0.3


@pytest.mark.asyncio
async def test_downstream_hang_ends_when_the_client_gives_up(downstream: Downstream) -> None:
    downstream.script("POST", "/hang", Reply(hang=True))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as http:
        with pytest.raises(TimeoutError):
            async with http.post(f"{downstream.url}/hang", json={}):
                pass

    [call] = downstream.calls("POST", "/hang")
    assert await call.finished() == "client_gone"


@pytest.mark.asyncio
async def test_downstream_redirects_and_drops_connections(downstream: Downstream) -> None:
    downstream.script("GET", "/moved", redirect_to("http://169.254.169.254/", status=307))
    downstream.script("POST", "/lost", Reply(disconnect=True))

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{downstream.url}/moved", allow_redirects=False) as response:
            assert (response.status, response.headers["Location"]) == (
                307,
                "http://169.254.169.254/",
            )
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.post(f"{downstream.url}/lost", json={"side": "effect"}):
                pass

    [lost] = downstream.calls("POST", "/lost")
    assert (lost.json, await lost.finished()) == ({"side": "effect"}, "disconnected")


@pytest.mark.asyncio
async def test_downstream_endless_body_stops_when_the_client_closes(
    downstream: Downstream,
) -> None:
    downstream.script("GET", "/endless", Reply(200, endless=True))

    async with aiohttp.ClientSession() as http, http.get(f"{downstream.url}/endless") as response:
        chunk = await response.content.readexactly(1_000_000)
    assert len(chunk) == 1_000_000

    [call] = downstream.calls("GET", "/endless")
    assert await call.finished() == "client_gone"


@pytest.mark.asyncio
async def test_downstream_wait_for_calls(downstream: Downstream) -> None:
    downstream.script("POST", "/events", Reply(202))

    async def later() -> None:
        await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as http:
            for n in range(2):
                async with http.post(f"{downstream.url}/events", json={"n": n}):
                    pass

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(later())
        calls = await downstream.wait_for_calls("POST", "/events", count=2)

    assert [c.json for c in calls] == [{"n": 0}, {"n": 1}]
    with pytest.raises(AssertionError, match="expected 3"):
        await downstream.wait_for_calls("POST", "/events", count=3, timeout_s=0.1)
