"""Delta events on a real JetStream: published after storage, republished after outages."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NatsClient
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.subjects import StreamNames
from blobflow.messaging.publisher import DeltaPublisher
from blobflow.messaging.streams import ensure_streams
from blobflow.runtime.admission import republish
from tests.servers import Downstream
from tests.support import binding_of, blob_event, engine_for, example_catalog, script_studio, start

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
        engine.sink = DeltaPublisher(js, prefix=names.deltas_prefix)
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
        engine.sink = DeltaPublisher(js, prefix=names.deltas_prefix, timeout_s=0.5)
        execution = await start(
            engine, blob_event(), binding_of(catalog, "blob_processing_workflow")
        )
        assert execution is not None
        assert execution.deltas_published is False

        await ensure_streams(js, names)
        publisher = DeltaPublisher(js, prefix=names.deltas_prefix)
        assert await republish(engine.store, publisher) == 1
        assert await republish(engine.store, publisher) == 0
        stored = await engine.store.get(execution.id)

    assert stored is not None
    assert stored.deltas_published is True
    assert len(await _events(nats_client, names)) == 3
