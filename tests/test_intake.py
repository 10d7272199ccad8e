"""Intake on a real JetStream and MongoDB-wire server: executions, dedupe, dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.leases import Lease
from blobflow.core.records import Execution
from blobflow.core.subjects import StreamNames
from blobflow.messaging.consumer import JetStreamDelivery
from blobflow.messaging.dead_letters import DeadLetterPublisher
from blobflow.messaging.streams import ensure_consumer, ensure_streams
from blobflow.runtime.intake import Intake
from blobflow.store.executions import ExecutionStore
from tests.support import example_catalog

Db = AsyncDatabase[dict[str, Any]]
CHAPTER = {
    "event_id": "evt-1",
    "blob_id": "blob-1",
    "user_id": "user-1",
    "metadata": {"type": "chapter"},
    "content": "It rained.",
}


class Admitted:
    """Admission without a dispatcher: stores leased to "w1" and keeps what it leased."""

    def __init__(self, store: ExecutionStore) -> None:
        self.store = store
        self.leased: list[tuple[Execution, Lease]] = []

    async def __call__(self, executions: Sequence[Execution]) -> int:
        leases = await self.store.create_many(executions, "w1")
        by_id = {execution.id: execution for execution in executions}
        self.leased.extend((by_id[lease.execution_id], lease) for lease in leases)
        return len(leases)


async def _intake(
    nats_client: NatsClient, mongo_db: Db, prefix: str
) -> tuple[Intake, JetStreamContext, StreamNames, Admitted]:
    names = StreamNames.prefixed(prefix)
    js = nats_client.jetstream()
    await ensure_streams(js, names)
    await ensure_consumer(js, names, ack_wait_s=30, max_ack_pending=100)
    store = ExecutionStore(mongo_db)
    await store.ensure_indexes()
    catalog = example_catalog()
    dispatched = Admitted(store)
    intake = Intake(
        dead_letters=DeadLetterPublisher(js, names.dlq_subject),
        names=names,
        catalog=lambda: catalog,
        admit=dispatched,
        max_event_bytes=64 * 1024,
    )
    return intake, js, names, dispatched


async def _drain(intake: Intake, js: JetStreamContext, names: StreamNames, count: int) -> list[str]:
    subscription = await js.pull_subscribe("", durable=names.consumer, stream=names.blobs)
    outcomes: list[str] = []
    while len(outcomes) < count:
        for msg in await subscription.fetch(count - len(outcomes), timeout=5):
            outcomes.append((await intake.process(JetStreamDelivery(msg))).reason)
    return outcomes


@pytest.mark.asyncio
async def test_an_event_becomes_leased_executions_once(
    nats_client: NatsClient, mongo_db: Db, stream_prefix: str
) -> None:
    intake, js, names, dispatched = await _intake(nats_client, mongo_db, stream_prefix)
    for _ in range(3):  # a producer retrying the same event
        await js.publish(names.created_subject, orjson.dumps(CHAPTER))

    outcomes = await _drain(intake, js, names, 3)

    assert outcomes == [
        "2 new of 2 executions",
        "0 new of 2 executions",
        "0 new of 2 executions",
    ]
    assert [(e.workflow_id, e.priority) for e, _ in dispatched.leased] == [
        ("book_chapter_expansion", 10),
        ("blob_processing_workflow", 0),
    ]
    documents = [d async for d in mongo_db["executions"].find({})]
    assert len(documents) == 2
    assert {d["status"] for d in documents} == {"pending"}
    assert {d["lease"]["owner"] for d in documents} == {"w1"}
    info = await js.consumer_info(names.blobs, names.consumer)
    assert info.num_ack_pending == 0
    assert info.num_pending == 0


BAD_MESSAGES: list[tuple[str, bytes, str]] = [
    ("not-json", b"{nope", "invalid_json"),
    ("invalid-utf8", b'{"event_id": "\xff"}', "invalid_json"),
    ("array", b"[1, 2]", "not_an_object"),
    ("string", b'"hello"', "not_an_object"),
    ("missing-event-id", orjson.dumps({"blob_id": "b", "user_id": "u"}), "missing_field"),
    ("missing-user", orjson.dumps({"event_id": "e", "blob_id": "b"}), "missing_field"),
    ("wrong-type", orjson.dumps({**CHAPTER, "blob_id": 7}), "invalid_field"),
    ("subject-mismatch", orjson.dumps({**CHAPTER, "event": "onUpdate"}), "event_mismatch"),
    ("too-large", orjson.dumps({**CHAPTER, "content": "x" * 70_000}), "too_large"),
    ("deep-nesting", b'{"a":' * 2000 + b"1" + b"}" * 2000, "invalid_json"),
    ("bad-metadata", orjson.dumps({**CHAPTER, "metadata": [1]}), "invalid_field"),
    ("huge-integer", orjson.dumps(CHAPTER)[:-1] + b', "size": ' + b"9" * 30 + b"}", "unstorable"),
    ("nan", orjson.dumps(CHAPTER)[:-1] + b', "x": NaN}', "invalid_json"),
    # Valid JSON that MongoDB cannot hold: each dead-lettered as unstorable.
    ("lone-surrogate", orjson.dumps(CHAPTER)[:-1] + b', "note": "\\ud800"}', "unstorable"),
    (
        "lone-surrogate-and-long-digits",
        orjson.dumps(CHAPTER)[:-1] + b', "n": 1234567890123456789, "note": "\\udfff"}',
        "unstorable",
    ),
    ("surrogate-key", orjson.dumps(CHAPTER)[:-1] + b', "\\ud800": 1}', "unstorable"),
    ("nul-in-key", orjson.dumps({**CHAPTER, "metadata": {"a\x00b": 1}}), "unstorable"),
    (
        "nested-95",
        orjson.dumps(CHAPTER)[:-1] + b', "d": ' + b"[" * 95 + b"]" * 95 + b"}",
        "unstorable",
    ),
]


@pytest.mark.asyncio
async def test_bad_messages_are_dead_lettered_and_the_next_event_still_runs(
    nats_client: NatsClient, mongo_db: Db, stream_prefix: str
) -> None:
    intake, js, names, dispatched = await _intake(nats_client, mongo_db, stream_prefix)
    for _, payload, _ in BAD_MESSAGES:
        await js.publish(names.created_subject, payload, headers={"X-Trace": "t1"})
    await js.publish(names.created_subject, orjson.dumps(CHAPTER))

    outcomes = await _drain(intake, js, names, len(BAD_MESSAGES) + 1)

    assert outcomes[-1] == "2 new of 2 executions"
    assert len(dispatched.leased) == 2
    letters = []
    for sequence in range(1, len(BAD_MESSAGES) + 1):
        message = await js.get_msg(names.dlq, sequence)
        letters.append(orjson.loads(message.data or b"{}"))
    assert [letter["reason"] for letter in letters] == [reason for _, _, reason in BAD_MESSAGES]
    assert [letter["stream_sequence"] for letter in letters] == list(
        range(1, len(BAD_MESSAGES) + 1)
    )
    assert letters[0]["payload"] == "{nope"
    assert letters[0]["subject"] == names.created_subject
    assert letters[0]["headers"]["X-Trace"] == "t1"
    assert letters[1]["payload_encoding"] == "base64"
    info = await js.consumer_info(names.blobs, names.consumer)
    assert info.num_ack_pending == 0
