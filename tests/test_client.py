"""The Python client on real servers: blob events, registration of a folder, tailing deltas."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.subjects import StreamNames, delta_subject
from blobflow.errors import DefinitionError
from blobflow.messaging.client import BlobflowClient, DeltaFeed
from blobflow.messaging.publisher import delta_event
from blobflow.messaging.registration import RegistrationResponder
from blobflow.messaging.streams import ensure_streams
from blobflow.store.definitions import DefinitionStore
from tests.api_support import ADMIN, ALICE, Api

ROOT = Path(__file__).resolve().parent.parent
Db = AsyncDatabase[dict[str, Any]]


async def _client(nc: NatsClient, prefix: str) -> BlobflowClient:
    names = StreamNames.prefixed(prefix)
    await ensure_streams(nc.jetstream(), names)
    return BlobflowClient(nc, names=names, register_subject=f"{prefix}.registry.register")


async def _definitions(db: Db) -> DefinitionStore:
    store = DefinitionStore(db)
    await store.ensure_indexes()
    return store


# --- blob events -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_publish_event_stores_the_event_json_with_its_msg_id(
    nats_client: NatsClient, stream_prefix: str
) -> None:
    client = await _client(nats_client, stream_prefix)
    created = await client.publish_event(
        "created", blob_id="b.1", user_id="u1", metadata={"type": "chapter"}, content="text"
    )
    updated = await client.publish_event(
        "updated",
        blob_id="b.1",
        user_id="u1",
        event_id="evt-2",
        previous={"metadata": {}, "content": None},
        provider_ids=("book-writer",),
        occurred_at="2024-05-01T10:00:00Z",
        content={"big": 2**70},
    )

    assert int(created, 16) >= 0  # a uuid4 in hex
    assert len(created) == 32
    assert updated == "evt-2"
    js = nats_client.jetstream()
    first, second = [await js.get_msg(client.names.blobs, seq) for seq in (1, 2)]
    assert first.subject == client.names.created_subject
    assert (first.headers or {})["Nats-Msg-Id"] == created
    assert orjson.loads(first.data or b"") == {
        "event_id": created,
        "blob_id": "b.1",
        "user_id": "u1",
        "metadata": {"type": "chapter"},
        "content": "text",
    }
    assert second.subject == client.names.updated_subject
    assert (second.headers or {})["Nats-Msg-Id"] == "evt-2"
    assert second.data == (
        b'{"event_id":"evt-2","blob_id":"b.1","user_id":"u1",'
        b'"content":{"big":1180591620717411303424},"previous":{"metadata":{},"content":null},'
        b'"provider_ids":["book-writer"],"occurred_at":"2024-05-01T10:00:00Z"}'
    )


@pytest.mark.asyncio
async def test_the_same_event_id_twice_is_stored_once(
    nats_client: NatsClient, stream_prefix: str
) -> None:
    client = await _client(nats_client, stream_prefix)
    for _ in range(2):
        await client.publish_event("created", blob_id="b", user_id="u", event_id="same")
    await client.publish_event("created", blob_id="b", user_id="u", event_id="other")
    info = await nats_client.jetstream().stream_info(client.names.blobs)
    assert info.state.messages == 2


@pytest.mark.asyncio
async def test_an_unknown_kind_is_refused(nats_client: NatsClient, stream_prefix: str) -> None:
    client = await _client(nats_client, stream_prefix)
    with pytest.raises(ValueError, match="'created' or 'updated'"):
        await client.publish_event("deleted", blob_id="b", user_id="u")  # type: ignore[arg-type]


# --- registration ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_register_folder_round_trips_through_a_responder(
    nats_client: NatsClient, stream_prefix: str, mongo_db: Db
) -> None:
    client = await _client(nats_client, stream_prefix)
    store = await _definitions(mongo_db)
    async with RegistrationResponder(nats_client, store, subject=client.register_subject):
        first = await client.register_folder(ROOT)
        again = await client.register_folder(ROOT)
    assert first["ok"] is True
    assert len(first["results"]) == 6
    assert all(r["version"] == 1 and r["changed"] for r in first["results"])
    assert [r["changed"] for r in again["results"]] == [False] * 6
    catalog = await store.catalog()
    assert "book-writer" in catalog.providers


@pytest.mark.asyncio
async def test_a_registration_sent_before_blobflow_listens_is_answered_once_it_does(
    nats_client: NatsClient, stream_prefix: str, mongo_db: Db
) -> None:
    client = await _client(nats_client, stream_prefix)
    store = await _definitions(mongo_db)
    sent = asyncio.create_task(client.register_folder(ROOT, timeout_s=10))
    await asyncio.sleep(0.5)  # no responder yet: the request is sent again meanwhile
    assert not sent.done()
    async with RegistrationResponder(nats_client, store, subject=client.register_subject):
        reply = await asyncio.wait_for(sent, 10)
    assert reply["ok"] is True


@pytest.mark.asyncio
async def test_unreadable_files_fail_before_anything_is_sent(
    nats_client: NatsClient, stream_prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "broken.yaml").write_text("id: [\n")
    client = await _client(nats_client, stream_prefix)
    # No responder listens: sending would raise NoRespondersError instead.
    with pytest.raises(DefinitionError, match=r"broken\.yaml:2: invalid YAML"):
        await client.register_folder(tmp_path)
    with pytest.raises(NoRespondersError):
        await client.register({"schemas": []}, timeout_s=2)


@pytest.mark.asyncio
async def test_register_sends_the_clients_token_which_blobflow_checks(
    api: Api, nats_client: NatsClient
) -> None:
    """The whole service, with tokens: only the admin token registers (§6)."""
    poet = {"provider": {"id": "poet", "name": "Poet"}, "workflows": []}
    replies = {
        name: await BlobflowClient(nats_client, token=token).register({"providers": [poet]})
        for name, token in (("none", None), ("alice", ALICE), ("admin", ADMIN))
    }
    for name in ("none", "alice"):
        [error] = replies[name]["errors"]
        assert (replies[name]["ok"], error["kind"], error["id"]) == (False, "auth", None), name
    assert replies["admin"] == {
        "ok": True,
        "results": [{"kind": "provider", "id": "poet", "version": 1, "changed": True}],
    }
    assert "poet" in api.service.engine.catalog.providers


# --- delta events ------------------------------------------------------------------------


async def _publish_delta(
    nc: NatsClient, names: StreamNames, provider_id: str, blob_id: str, index: int
) -> None:
    delta = {
        "_id": f"exec-{provider_id}-{blob_id}:{index}",
        "blob_id": blob_id,
        "provider_id": provider_id,
        "workflow_id": "wf",
        "workflow_version": 1,
        "execution_id": f"exec-{provider_id}-{blob_id}",
        "event_id": "evt",
        "type": "update",
        "path": "/metadata/x",
        "new_value": index,
        "old_value": None,
        "version": index + 1,
        "timestamp": datetime(2024, 5, 1, tzinfo=UTC),
    }
    subject = delta_subject(provider_id, blob_id, names.deltas_prefix)
    await nc.jetstream().publish(subject, delta_event(delta), headers={"Nats-Msg-Id": delta["_id"]})


async def _take(feed: DeltaFeed, count: int) -> list[tuple[str, str, int]]:
    async with asyncio.timeout(10):
        events = [await anext(feed) for _ in range(count)]
    return [(e["provider_id"], e["blob_id"], e["new_value"]) for e in events]


SEEN = [("p.1", "b 1", 0), ("p.1", "b2", 1), ("p2", "b 1", 2), ("p2", "b2", 3)]


@pytest.mark.parametrize(
    ("provider_id", "blob_id", "expected"),
    [
        (None, None, SEEN),
        ("p.1", None, SEEN[:2]),
        (None, "b 1", [SEEN[0], SEEN[2]]),
        ("p2", "b2", SEEN[3:]),
    ],
)
@pytest.mark.asyncio
async def test_deltas_yields_stored_events_matching_the_filters(
    nats_client: NatsClient,
    stream_prefix: str,
    provider_id: str | None,
    blob_id: str | None,
    expected: list[tuple[str, str, int]],
) -> None:
    client = await _client(nats_client, stream_prefix)
    for provider, blob, index in SEEN:
        await _publish_delta(nats_client, client.names, provider, blob, index)
    # A non-JSON message on the stream is skipped, not fatal.
    await nats_client.jetstream().publish(f"{client.names.deltas_prefix}.p2.b2", b"not json")
    # The filter matches this last one: nothing else came through before it.
    last = (provider_id or "p2", blob_id or "b2", 9)
    await _publish_delta(nats_client, client.names, *last)

    feed = client.deltas(provider_id=provider_id, blob_id=blob_id, deliver_new_only=False)
    async with feed:
        got = await _take(feed, len(expected) + 1)
    assert got == [*expected, last]
    event = await _event_of(client, "p.1", "b 1")
    assert event["id"] == "exec-p.1-b 1:0"
    assert event["timestamp"] == "2024-05-01T00:00:00.000Z"


async def _event_of(client: BlobflowClient, provider_id: str, blob_id: str) -> dict[str, Any]:
    async with client.deltas(provider_id=provider_id, blob_id=blob_id, deliver_new_only=False) as f:
        async with asyncio.timeout(10):
            return await anext(f)


@pytest.mark.asyncio
async def test_deltas_new_only_starts_after_what_is_stored(
    nats_client: NatsClient, stream_prefix: str
) -> None:
    client = await _client(nats_client, stream_prefix)
    await _publish_delta(nats_client, client.names, "p", "b", 0)
    async with client.deltas() as feed:
        await _publish_delta(nats_client, client.names, "p", "b", 1)
        await _publish_delta(nats_client, client.names, "q", "c", 2)
        assert await _take(feed, 2) == [("p", "b", 1), ("q", "c", 2)]
    # Closed: iteration ends instead of waiting forever.
    with pytest.raises(StopAsyncIteration):
        await anext(feed)


@pytest.mark.asyncio
async def test_iterating_without_entering_subscribes_on_first_use(
    nats_client: NatsClient, stream_prefix: str
) -> None:
    client = await _client(nats_client, stream_prefix)
    await _publish_delta(nats_client, client.names, "p", "b", 0)
    feed = client.deltas(deliver_new_only=False)
    try:
        assert await _take(feed, 1) == [("p", "b", 0)]
    finally:
        await feed.aclose()


@pytest.mark.asyncio
async def test_new_only_survives_a_consumer_reset_before_the_first_event(
    nats_client: NatsClient, stream_prefix: str
) -> None:
    client = await _client(nats_client, stream_prefix)
    await _publish_delta(nats_client, client.names, "p", "b", 0)
    async with client.deltas() as feed:
        # What nats-py does after missed heartbeats (a reconnect): recreate the consumer
        # after the last delivered sequence, which is 0 when nothing came yet.
        jsi = feed._sub._sub._jsi if feed._sub is not None else None
        assert jsi is not None
        await jsi.reset_ordered_consumer(jsi._sseq + 1)
        await _publish_delta(nats_client, client.names, "p", "b", 1)
        assert await _take(feed, 1) == [("p", "b", 1)]
