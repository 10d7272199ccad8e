"""The engine end to end: real MongoDB-wire server, real downstream HTTP server."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

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


@pytest.mark.asyncio
async def test_blob_processing_runs_to_completion_and_stores_deltas(
    mongo_db: Db, downstream: Downstream
) -> None:
    script_studio(downstream)
    catalog = example_catalog()
    async with engine_for(catalog, mongo_db, downstream) as engine:
        event = blob_event(metadata={"content_type": "text/plain"}, content="hello")
        execution = await start(engine, event, binding_of(catalog, "blob_processing_workflow"))

        assert execution is not None
        assert execution.status == "completed", execution.error
        assert [s.status for s in execution.steps] == ["completed"] * 4
        assert execution.progress == {"completed": 4, "total": 4}
        assert execution.decisions[0].result is True

        stored = await engine.store.get(execution.id)
        assert stored is not None
        assert stored.status == "completed"
        assert stored.output == execution.output

    deltas = [d async for d in mongo_db["deltas"].find({}, sort=[("version", 1)])]
    assert [(d["type"], d["path"], d["version"]) for d in deltas] == [
        ("set", "/metadata/checked", 1),
        ("set", "/metadata/size", 2),
        ("create_derived", "/derived", 3),
    ]
    assert [d["_id"] for d in deltas] == [f"{execution.id}:{i}" for i in range(3)]
    assert deltas[1]["old_value"] == 40
    assert stored.deltas_published is False  # no NATS in this test: left for republishing

    keys = [r.headers["Idempotency-Key"] for r in downstream.requests]
    assert keys == [
        f"{execution.id}:{name}"
        for name in ("validate_blob", "extract_metadata", "trigger_providers", "generate_deltas")
    ]
    trigger = downstream.calls("POST", "/providers/trigger")[0]
    assert trigger.json == {
        "blob_id": "blob-1",
        "provider_ids": None,
        "metadata": {"content_type": "text/plain", "size": 42},
    }


@pytest.mark.asyncio
async def test_book_chapter_expansion_end_to_end(mongo_db: Db, downstream: Downstream) -> None:
    script_studio(downstream)
    catalog = example_catalog()
    async with engine_for(catalog, mongo_db, downstream) as engine:
        event = blob_event(blob_id="chapter/7", metadata={"type": "chapter"}, content="It rained.")
        execution = await start(engine, event, binding_of(catalog, "book_chapter_expansion"))

    assert execution is not None
    assert execution.status == "completed", execution.error
    load = downstream.calls("GET", "/blobs/{blob_id}")[0]
    assert load.path == "/blobs/chapter%2F7"
    generate = downstream.calls("POST", "/generate")[0].json
    assert isinstance(generate, dict)
    prompt = generate["prompt"]
    assert "a noir style" in prompt
    assert prompt.rstrip().endswith("It rained.")
    save = downstream.calls("POST", "/blobs")[0].json
    assert isinstance(save, dict)
    assert save["metadata"] == {
        "type": "expanded_chapter",
        "original_id": "chapter/7",
        "consistency_score": 0.9,
        "word_count": 3,
    }
    deltas = [d async for d in mongo_db["deltas"].find({}, sort=[("version", 1)])]
    assert [(d["type"], d["version"]) for d in deltas] == [
        ("link", 1),
        ("transform", 2),
        ("create_derived", 3),
    ]
    assert deltas[1]["new_value"] == "It rained hard."
    assert deltas[1]["old_value"] == "It rained."


@pytest.mark.asyncio
async def test_the_same_binding_of_an_event_runs_once(mongo_db: Db, downstream: Downstream) -> None:
    script_studio(downstream)
    catalog = example_catalog()
    binding = binding_of(catalog, "blob_processing_workflow")
    async with engine_for(catalog, mongo_db, downstream) as engine:
        first = await start(engine, blob_event(), binding)
        again = await start(engine, blob_event(), binding)

    assert first is not None
    assert again is None
    assert await mongo_db["executions"].count_documents({}) == 1
    assert await mongo_db["deltas"].count_documents({}) == 3


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "body",
    [
        b'{"note": "\\ud800"}',
        b'{"n": 1234567890123456789, "note": "\\udfff"}',
        b'{"deep": ' + b"[" * 95 + b"]" * 95 + b"}",
        b'{"bad\\u0000key": 1}',
    ],
    ids=["lone-surrogate", "lone-surrogate-and-long-digits", "nested-95", "nul-in-key"],
)
async def test_an_answer_the_database_cannot_hold_fails_its_step_at_once(
    mongo_db: Db, downstream: Downstream, body: bytes
) -> None:
    json = {"Content-Type": "application/json"}
    downstream.script("POST", "/a", [Reply(200, body=body, headers=json)])
    retrying = {"max_attempts": 3, "backoff_ms": 1}
    catalog = catalog_with([step("a", retry=retrying), step("b")])
    async with engine_for(catalog, mongo_db, downstream) as engine:
        execution = await start(engine, blob_event(), binding_of(catalog, "wf"))

    assert execution is not None
    assert execution.status == "failed"
    record = execution.step("a")
    assert record.status == "failed"
    assert record.attempts == 1  # never retried: the same answer would come again
    assert record.error is not None
    assert record.error.startswith("unstorable_response: the answer cannot be stored: ")
    assert record.output is None
    assert len(downstream.calls("POST", "/a")) == 1
    assert downstream.calls("POST", "/b") == []
    stored = await mongo_db["executions"].find_one({"_id": execution.id})
    assert stored is not None
    assert stored["status"] == "failed"
