"""Delta events on a real JetStream: published after storage, republished after outages."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NatsClient
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.subjects import StreamNames
from blobflow.messaging.publisher import DeltaPublisher, delta_event, header_bytes
from blobflow.messaging.streams import ensure_streams
from blobflow.metrics import Metrics
from blobflow.runtime.republishing import Republisher
from tests.servers import Downstream, Reply
from tests.support import (
    binding_of,
    blob_event,
    catalog_with,
    engine_for,
    example_catalog,
    script_studio,
    start,
    step,
)

Db = AsyncDatabase[dict[str, Any]]


async def _events(
    nats_client: NatsClient, names: StreamNames
) -> list[tuple[str, dict[str, Any], str]]:
    js = nats_client.jetstream()
    info = await js.stream_info(names.deltas)
    found: list[tuple[str, dict[str, Any], str]] = []
    for sequence in range(1, info.state.last_seq + 1):
        message = await js.get_msg(names.deltas, sequence)
        headers = message.headers or {}
        subject = message.subject or ""
        found.append((subject, orjson.loads(message.data or b"{}"), headers["Nats-Msg-Id"]))
    return found


@pytest.mark.asyncio
async def test_each_delta_is_published_once_with_its_id(
    mongo_db: Db, downstream: Downstream, nats_client: NatsClient, stream_prefix: str
) -> None:
    names = StreamNames.prefixed(stream_prefix)
    js = nats_client.jetstream()
    await ensure_streams(js, names)
    script_studio(downstream)
    catalog = example_catalog()
    async with engine_for(catalog, mongo_db, downstream) as engine:
        engine.sink = DeltaPublisher(js, prefix=names.deltas_prefix, nc=nats_client)
        event = blob_event(blob_id="blob.1 *x")
        execution = await start(engine, event, binding_of(catalog, "blob_processing_workflow"))

    assert execution is not None
    assert execution.deltas_published is True
    events = await _events(nats_client, names)
    assert [subject for subject, _, _ in events] == [
        f"{names.deltas_prefix}.memmie-studio.blob%2E1%20%2Ax"
    ] * 3
    assert [msg_id for _, _, msg_id in events] == [f"{execution.id}:{i}" for i in range(3)]
    first = events[0][1]
    assert first["id"] == f"{execution.id}:0"
    assert first["blob_id"] == "blob.1 *x"
    assert first["version"] == 1
    assert first["timestamp"].endswith("Z")
    assert "_id" not in first


@pytest.mark.asyncio
async def test_deltas_stored_while_nats_was_unavailable_are_republished(
    mongo_db: Db, downstream: Downstream, nats_client: NatsClient, stream_prefix: str
) -> None:
    names = StreamNames.prefixed(stream_prefix)
    js = nats_client.jetstream()
    script_studio(downstream)
    catalog = example_catalog()
    async with engine_for(catalog, mongo_db, downstream) as engine:
        # No DELTAS stream yet: JetStream answers no-responders, nothing is confirmed.
        engine.sink = DeltaPublisher(js, prefix=names.deltas_prefix, timeout_s=0.5, nc=nats_client)
        execution = await start(
            engine, blob_event(), binding_of(catalog, "blob_processing_workflow")
        )
        assert execution is not None
        assert execution.deltas_published is False

        await ensure_streams(js, names)
        publisher = DeltaPublisher(js, prefix=names.deltas_prefix, nc=nats_client)
        republisher = Republisher(engine.store, publisher, base_s=1, cap_s=8)
        assert await republisher.round() == 1
        assert await republisher.round() == 0
        stored = await engine.store.get(execution.id)

    assert stored is not None
    assert stored.deltas_published is True
    assert len(await _events(nats_client, names)) == 3


@pytest.mark.asyncio
async def test_a_delta_event_over_max_payload_is_published_without_its_values(
    mongo_db: Db, downstream: Downstream, nats_client: NatsClient, stream_prefix: str
) -> None:
    names = StreamNames.prefixed(stream_prefix)
    js = nats_client.jetstream()
    await ensure_streams(js, names)
    assert nats_client.max_payload == 1024 * 1024  # the server's default
    big, old = "n" * 600_000, "o" * 600_000  # each fits, together they do not
    operations = [
        {"op": "transform", "path": "/content", "value": big, "old_value": old},
        {"op": "set", "path": "/metadata/size", "value": 42, "old_value": 40},
    ]
    downstream.script("POST", "/a", Reply(200, json={"delta_operations": operations}))
    catalog = catalog_with([step("a")])
    metrics = Metrics()
    async with engine_for(catalog, mongo_db, downstream) as engine:
        engine.sink = DeltaPublisher(
            js, prefix=names.deltas_prefix, metrics=metrics, nc=nats_client
        )
        execution = await start(engine, blob_event(), binding_of(catalog, "wf"))
        assert execution is not None
        stored = await engine.store.deltas_of(execution.id)

    assert execution.deltas_published is True
    events = {event["id"]: event for _, event, _ in await _events(nats_client, names)}
    omitted, kept = events[f"{execution.id}:0"], events[f"{execution.id}:1"]
    assert (omitted["new_value"], omitted["old_value"], omitted["values_omitted"]) == (
        None,
        None,
        True,
    )
    assert (omitted["type"], omitted["path"], omitted["version"]) == ("transform", "/content", 1)
    assert (kept["new_value"], kept["old_value"]) == (42, 40)
    assert "values_omitted" not in kept
    # The stored delta keeps its values, for GET /v1/blobs/{blob_id}/deltas.
    assert (stored[0]["new_value"], stored[0]["old_value"]) == (big, old)
    assert "values_omitted" not in stored[0]
    exposition = metrics.exposition()[0].decode()
    assert "\nblobflow_delta_events_values_omitted_total 1.0\n" in exposition


def _delta(new_value: str) -> dict[str, Any]:
    return {
        "_id": "e1:0",
        "blob_id": "b1",
        "provider_id": "p",
        "execution_id": "e1",
        "type": "set",
        "path": "/x",
        "new_value": new_value,
        "old_value": None,
        "version": 1,
    }


@pytest.mark.asyncio
async def test_headers_count_against_max_payload(
    nats_client: NatsClient, stream_prefix: str
) -> None:
    names = StreamNames.prefixed(stream_prefix)
    js = nats_client.jetstream()
    await ensure_streams(js, names)
    publisher = DeltaPublisher(js, prefix=names.deltas_prefix, nc=nats_client)
    room = nats_client.max_payload - header_bytes({"Nats-Msg-Id": "e1:0"})
    # A value that makes headers and body exactly max_payload: the server takes it.
    padding = room - len(delta_event(_delta("")))
    assert await publisher.publish([_delta("v" * padding)]) is True
    # One byte more, the body alone would still fit: it goes without its values.
    fitting = _delta("w" * (padding + 1))
    fitting["_id"] = "e1:1"
    assert len(delta_event(fitting)) < nats_client.max_payload
    assert await publisher.publish([fitting]) is True

    events = [event for _, event, _ in await _events(nats_client, names)]
    assert [len(event["new_value"] or "") for event in events] == [padding, 0]
    assert [event.get("values_omitted") for event in events] == [None, True]
