"""The whole service in-process against real NATS, MongoDB-wire and HTTP servers."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.app import run
from blobflow.messaging import connection
from blobflow.messaging.client import BlobflowClient
from tests.api_support import ADMIN, Servers
from tests.support import eventually, script_studio

Db = AsyncDatabase[dict[str, Any]]
CHAPTER = {
    "event_id": "evt-app-1",
    "blob_id": "blob-7",
    "user_id": "user-1",
    "metadata": {"type": "chapter"},
    "content": "It rained.",
}


async def _collect(nats_client: NatsClient, subject: str, count: int) -> list[Msg]:
    received: list[Msg] = []
    done = asyncio.Event()

    async def on_message(msg: Msg) -> None:
        received.append(msg)
        if len(received) >= count:
            done.set()

    subscription = await nats_client.subscribe(subject, cb=on_message)
    try:
        await asyncio.wait_for(done.wait(), timeout=20)
    finally:
        await subscription.unsubscribe()
    return received


@pytest.mark.asyncio
async def test_an_event_flows_to_stored_and_published_deltas(
    servers: Servers,
    mongo_db: Db,
    nats_client: NatsClient,
) -> None:
    script_studio(servers.downstream)
    names = servers.names
    async with servers.serve() as api:
        service = api.service
        collecting = asyncio.ensure_future(_collect(nats_client, f"{names.deltas_prefix}.>", 6))
        await asyncio.sleep(0.05)  # the subscription is in place
        js = nats_client.jetstream()
        for _ in range(3):  # one event, delivered three times
            await js.publish(names.created_subject, orjson.dumps(CHAPTER))
        events = await collecting

        url = f"http://127.0.0.1:{service.http_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/healthz") as response:
                assert response.status == 200
            async with http.get(f"{url}/readyz") as response:
                assert response.status == 200
                assert (await response.json())["checks"] == {
                    "nats": True,
                    "mongodb": True,
                    "accepting_work": True,
                }

    assert len(events) == 6
    assert {msg.subject for msg in events} == {
        f"{names.deltas_prefix}.book-writer.blob-7",
        f"{names.deltas_prefix}.memmie-studio.blob-7",
    }
    executions = [d async for d in mongo_db["executions"].find({})]
    assert sorted(d["status"] for d in executions) == ["completed", "completed"]
    assert all(d["deltas_published"] for d in executions)
    versions = sorted([d["version"] async for d in mongo_db["deltas"].find({"blob_id": "blob-7"})])
    assert versions == [1, 2, 3, 4, 5, 6]
    registered = await mongo_db["definitions"].count_documents({"committed": True})
    assert registered == 6


@pytest.mark.asyncio
async def test_a_restart_in_the_middle_of_a_backlog_loses_and_duplicates_nothing(
    servers: Servers,
    mongo_db: Db,
    nats_client: NatsClient,
) -> None:
    script_studio(servers.downstream)
    names = servers.names
    js = nats_client.jetstream()
    events = 200

    async def completed() -> int:
        return await mongo_db["executions"].count_documents({"status": "completed"})

    async with servers.serve():
        for index in range(events):
            event = {"event_id": f"evt-{index}", "blob_id": f"blob-{index % 20}", "user_id": "u"}
            await js.publish(names.created_subject, orjson.dumps(event))

        async def some_done() -> bool:
            return await completed() >= 30

        await eventually(some_done)
    stopped_at = await completed()
    assert stopped_at < events, "the backlog was finished before the stop"

    async with servers.serve():

        async def all_done() -> bool:
            return await completed() == events

        await eventually(all_done, timeout_s=120)
        info = await js.consumer_info(names.blobs, names.consumer)
        assert info.num_pending == 0
        assert info.num_ack_pending == 0

    assert await mongo_db["executions"].count_documents({}) == events
    assert await mongo_db["deltas"].count_documents({}) == 3 * events
    for blob in range(20):
        versions = [
            d["version"] async for d in mongo_db["deltas"].find({"blob_id": f"blob-{blob}"})
        ]
        assert sorted(versions) == list(range(1, 31)), blob
    stream = await js.stream_info(names.deltas)
    assert stream.state.messages == 3 * events


@pytest.mark.asyncio
async def test_a_bundle_registered_over_nats_changes_what_the_next_event_triggers(
    servers: Servers,
    mongo_db: Db,
    nats_client: NatsClient,
) -> None:
    script_studio(servers.downstream)
    client = BlobflowClient(nats_client, names=servers.names, token=ADMIN)
    condition = {"field": "metadata.type", "operator": "eq", "value": "poem"}
    binding: dict[str, Any] = {
        "workflow_id": "blob_processing_workflow",
        "priority": 3,
        "triggers": [{"event": "onCreate", "conditions": [condition]}],
    }
    poems = {"provider": {"id": "poet", "name": "Poet"}, "workflows": [binding]}
    broken = {**poems, "workflows": [{**binding, "workflow_id": "no_such_workflow"}]}
    async with servers.serve() as api:
        service = api.service
        refused = await client.register({"providers": [broken]})
        assert refused["ok"] is False
        assert refused["errors"][0]["path"] == "workflows[0].workflow_id"
        assert "poet" not in service.engine.catalog.providers

        accepted = await client.register({"providers": [poems]})
        assert accepted == {
            "ok": True,
            "results": [{"kind": "provider", "id": "poet", "version": 1, "changed": True}],
        }
        assert "poet" in service.engine.catalog.providers

        await client.publish_event(
            "created", event_id="poem-1", blob_id="poem", user_id="u", metadata={"type": "poem"}
        )

        async def ran() -> bool:
            return await mongo_db["executions"].count_documents({"status": "completed"}) == 2

        await eventually(ran)

    providers = sorted([d["provider_id"] async for d in mongo_db["executions"].find({})])
    assert providers == ["memmie-studio", "poet"]


@pytest.mark.asyncio
async def test_intake_resumes_after_nats_server_restarts(
    servers: Servers,
    mongo_db: Db,
    nats_client: NatsClient,
) -> None:
    script_studio(servers.downstream)
    names = servers.names
    async with servers.serve() as api:
        service = api.service
        servers.nats.restart()  # same port and store: streams and consumer survive
        client = BlobflowClient(nats_client, names=names)

        async def published() -> bool:
            try:
                await client.publish_event("created", event_id="after", blob_id="b", user_id="u")
            except Exception:
                return False  # still reconnecting
            return True

        await eventually(published, timeout_s=30, interval_s=0.2)

        async def processed() -> bool:
            return await mongo_db["executions"].count_documents({"status": "completed"}) == 1

        await eventually(processed, timeout_s=60)
        assert service.nc.is_connected


@pytest.mark.asyncio
async def test_the_service_exits_non_zero_when_nats_is_gone_for_good(
    servers: Servers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "RECONNECT_ATTEMPTS", 2)
    running = asyncio.ensure_future(run(servers.settings(), asyncio.Event(), servers.names))
    await asyncio.sleep(1.0)  # started
    assert not running.done()
    servers.nats.stop()
    try:
        assert await asyncio.wait_for(running, timeout=30) == 1
    finally:
        servers.nats.start()
