"""The registry after an upgrade: what an older version registered and this one refuses to run
(a trigger or schema pattern that is not linear-time) is disabled with the reason, and the
registered state still loads (CONTRACT §5.3, §6; RELIABILITY guarantee 8)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.definitions import Kind
from blobflow.core.sources import SourceDocument, read_paths
from blobflow.errors import DefinitionError
from blobflow.store.definitions import DefinitionStore

ROOT = Path(__file__).resolve().parent.parent
Db = AsyncDatabase[dict[str, Any]]
CHAPTER = "book_chapter_expansion"
PROCESSING = "blob_processing_workflow"
EVENT = {"event_id": "e", "blob_id": "b", "user_id": "u", "metadata": {"type": "chapter"}}
LEGACY: dict[str, Any] = {
    "provider": {"id": "legacy", "name": "Legacy"},
    "workflows": [
        {
            "workflow_id": CHAPTER,
            "triggers": [
                {
                    "event": "onCreate",
                    # Lookahead: Python's `re` ran it, RE2 does not.
                    "conditions": [
                        {"field": "metadata.title", "operator": "matches", "value": "^(?!draft)"}
                    ],
                }
            ],
        },
        {"workflow_id": PROCESSING, "triggers": [{"event": "onCreate"}]},
    ],
}


async def _registered(db: Db) -> DefinitionStore:
    store = DefinitionStore(db)
    await store.ensure_indexes()
    documents, problems = read_paths([ROOT])
    assert problems == []
    await store.register(documents)
    return store


async def _insert_registered(db: Db, kind: Kind, item_id: str, version: int, data: Any) -> None:
    """A committed row as an older version wrote it, bypassing today's checks."""
    await db["definitions"].insert_one(
        {
            "_id": f"{kind}:{item_id}:{version}",
            "kind": kind,
            "id": item_id,
            "version": version,
            "hash": "older",
            "document": data,
            "committed": True,
        }
    )


def _pairs(bindings: Any) -> set[tuple[str, str]]:
    return {(b.provider_id, b.workflow_id) for b in bindings}


@pytest.mark.asyncio
async def test_a_registered_pattern_re2_refuses_disables_its_binding_and_the_rest_loads(
    mongo_db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    store = await _registered(mongo_db)
    await _insert_registered(mongo_db, "provider", "legacy", 1, LEGACY)
    with caplog.at_level(logging.WARNING, "blobflow.store.definitions"):
        catalog = await store.catalog()
        await store.catalog()  # a reload: what was logged is not logged again
    [disabled] = catalog.disabled_bindings
    assert (disabled.provider_id, disabled.workflow_id) == ("legacy", CHAPTER)
    assert disabled.reason == (
        "workflows[0].triggers[0].conditions[0].value: operator 'matches' has an invalid "
        "regular expression '^(?!draft)': invalid perl operator: (?! (RE2 has no lookahead)"
    )
    assert [r.getMessage() for r in caplog.records] == [
        f"binding of provider legacy to workflow {CHAPTER} is disabled, no event starts it: "
        f"{disabled.reason}"
    ]
    assert set(catalog.providers) == {"book-writer", "memmie-studio", "legacy"}
    matched = _pairs(catalog.match(EVENT, "onCreate"))
    assert ("legacy", PROCESSING) in matched
    assert ("legacy", CHAPTER) not in matched
    assert ("book-writer", CHAPTER) in matched

    # Other registrations go on; the old provider as it stands is refused, naming the pattern.
    workflow = next(d for d in read_paths([ROOT])[0] if d.item_id == CHAPTER)
    changed = SourceDocument("workflow", "bundle[0]", {**workflow.data, "description": "again"})
    [result] = await store.register([changed])
    assert result.changed
    with pytest.raises(DefinitionError, match=r"RE2 has no lookahead"):
        await store.register([SourceDocument("provider", "bundle[0]", LEGACY)])


@pytest.mark.asyncio
async def test_a_registered_schema_pattern_the_linear_engine_refuses_disables_its_users(
    mongo_db: Db,
) -> None:
    store = await _registered(mongo_db)
    [source] = [d for d in read_paths([ROOT])[0] if d.item_id == "blob_input_schema_v1"]
    schema = copy.deepcopy(source.data)
    schema["definition"]["properties"]["blob_id"]["pattern"] = "^(?!tmp-)"
    await _insert_registered(mongo_db, "schema", "blob_input_schema_v1", 2, schema)
    catalog = await store.catalog()
    [disabled_schema] = catalog.disabled_schemas
    assert disabled_schema.schema_id == "blob_input_schema_v1"
    assert "'^(?!tmp-)' has a backreference or lookaround" in disabled_schema.reason
    assert _pairs(catalog.disabled_bindings) == {("memmie-studio", PROCESSING)}
    [violation] = catalog.validators["blob_input_schema_v1"].violations({"blob_id": "b"})
    assert "schema 'blob_input_schema_v1' is disabled" in violation.message
    assert _pairs(catalog.match(EVENT, "onCreate")) == {("book-writer", CHAPTER)}
