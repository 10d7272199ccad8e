"""Registered definitions in MongoDB: versions, all-or-nothing bundles, concurrent registrars."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.bundles import ItemResult
from blobflow.core.definitions import Kind
from blobflow.core.sources import SourceDocument, read_paths
from blobflow.errors import DefinitionError
from blobflow.store.definitions import DefinitionStore
from tests.servers import MongoDeployment
from tests.support import CommandLog

ROOT = Path(__file__).resolve().parent.parent
Db = AsyncDatabase[dict[str, Any]]
CHAPTER = "book_chapter_expansion"
PROCESSING = "blob_processing_workflow"


def _examples() -> list[SourceDocument]:
    documents, problems = read_paths([ROOT])
    assert problems == []
    return documents


def _example(kind: Kind, item_id: str) -> SourceDocument:
    for document in _examples():
        data = document.data["provider"] if kind == "provider" else document.data
        if document.kind == kind and data["id"] == item_id:
            return document
    raise LookupError(item_id)


def _changed(kind: Kind, item_id: str, source: str = "bundle[0]", **fields: Any) -> SourceDocument:
    data = copy.deepcopy(_example(kind, item_id).data)
    data.update(fields)
    return SourceDocument(kind, source, data)


def _provider(source: str, workflow_id: str) -> SourceDocument:
    data = {
        "provider": {"id": "reviewer", "name": "Reviewer"},
        "workflows": [{"workflow_id": workflow_id, "triggers": [{"event": "onCreate"}]}],
    }
    return SourceDocument("provider", source, data)


async def _store(db: Db) -> DefinitionStore:
    store = DefinitionStore(db)
    await store.ensure_indexes()
    return store


async def _registered(db: Db) -> DefinitionStore:
    store = await _store(db)
    await store.register(_examples())
    return store


async def _count(db: Db, **query: Any) -> int:
    return await db["definitions"].count_documents(query)


def _by_id(results: list[ItemResult]) -> dict[str, ItemResult]:
    return {result.id: result for result in results}


@pytest.mark.asyncio
async def test_first_registration_gives_version_1_to_everything(mongo_db: Db) -> None:
    store = await _store(mongo_db)
    results = await store.register(_examples())
    assert [(r.kind, r.id) for r in results] == [(d.kind, _id(d)) for d in _examples()]
    assert all(r.version == 1 and r.changed for r in results)
    assert await _count(mongo_db, committed=True) == 6


@pytest.mark.asyncio
async def test_the_same_bundle_again_changes_nothing(mongo_db: Db) -> None:
    store = await _registered(mongo_db)
    results = await store.register(_examples())
    assert all(r.version == 1 and not r.changed for r in results)
    assert await _count(mongo_db) == 6


@pytest.mark.asyncio
async def test_a_changed_item_gets_the_next_version(mongo_db: Db) -> None:
    store = await _registered(mongo_db)
    bundle = [
        _changed("workflow", CHAPTER, description="Longer chapters") if _id(d) == CHAPTER else d
        for d in _examples()
    ]
    results = _by_id(await store.register(bundle))
    assert results[CHAPTER] == ItemResult("workflow", CHAPTER, 2, changed=True)
    assert all(r.version == 1 and not r.changed for i, r in results.items() if i != CHAPTER)
    assert await _count(mongo_db) == 7
    catalog = await store.catalog()
    assert catalog.version("workflow", CHAPTER) == 2
    assert catalog.workflows[CHAPTER].spec.description == "Longer chapters"


@pytest.mark.asyncio
async def test_an_invalid_bundle_names_the_item_and_writes_nothing(mongo_db: Db) -> None:
    store = await _registered(mongo_db)
    bad_step = {"id": "s", "service": "studio", "endpoint": "/s", "input_map": {"x": "$.steps.t"}}
    workflow = _changed("workflow", CHAPTER, source="workflows[0]", steps=[bad_step])
    with pytest.raises(DefinitionError) as raised:
        await store.register([workflow, _provider("providers[0]", "no_such_workflow")])
    assert {problem.source for problem in raised.value.problems} == {
        "providers[0]",
        "workflows[0]",
    }
    assert await _count(mongo_db) == 6


@pytest.mark.asyncio
async def test_a_bundle_may_rely_on_what_is_registered(mongo_db: Db) -> None:
    store = await _registered(mongo_db)
    results = await store.register([_provider("providers[0]", CHAPTER)])
    assert results == [ItemResult("provider", "reviewer", 1, changed=True)]
    catalog = await store.catalog()
    assert {b.provider_id for b in catalog.bindings if b.workflow_id == CHAPTER} == {
        "book-writer",
        "reviewer",
    }


@pytest.mark.asyncio
async def test_a_bundle_that_breaks_what_is_registered_is_rejected(mongo_db: Db) -> None:
    store = await _registered(mongo_db)
    schema = _changed("schema", "blob_input_schema_v1", source="schemas[0]", type="output")
    with pytest.raises(DefinitionError) as raised:
        await store.register([schema])
    [problem] = raised.value.problems
    # The registered workflow that would break is named, with its version.
    assert problem.source == f"registered:workflow:{PROCESSING}:v1"
    assert problem.path == ("input_schema_id",)
    assert await _count(mongo_db) == 6


@pytest.mark.asyncio
async def test_an_unstorable_value_is_a_definition_error(mongo_db: Db) -> None:
    store = await _registered(mongo_db)
    step = {"id": "s", "service": "studio", "endpoint": "/s", "input_map": {"n": 2**70}}
    with pytest.raises(DefinitionError) as raised:
        await store.register([_changed("workflow", CHAPTER, source="workflows[3]", steps=[step])])
    assert [p.source for p in raised.value.problems] == ["workflows[3]"]
    assert await _count(mongo_db) == 6


@pytest.mark.asyncio
async def test_catalog_of_an_empty_registry_is_empty(mongo_db: Db) -> None:
    catalog = await (await _store(mongo_db)).catalog()
    assert not catalog.workflows
    assert not catalog.versions


@pytest.mark.asyncio
async def test_documents_are_kept_as_given_per_version(mongo_db: Db) -> None:
    store = await _registered(mongo_db)
    await store.register([_changed("workflow", CHAPTER, description="v2")])
    original = _example("workflow", CHAPTER).data
    assert await store.document("workflow", CHAPTER, 1) == original
    second = await store.document("workflow", CHAPTER, 2)
    assert second is not None
    assert second["description"] == "v2"
    assert await store.document("workflow", CHAPTER, 3) is None


@pytest.mark.asyncio
async def test_an_old_version_still_compiles_as_it_was(mongo_db: Db) -> None:
    store = await _registered(mongo_db)
    steps = _example("workflow", CHAPTER).data["steps"][:1]
    await store.register([_changed("workflow", CHAPTER, steps=steps, output_map=None)])
    old = await store.compiled_workflow(CHAPTER, 1)
    new = await store.compiled_workflow(CHAPTER, 2)
    assert old is not None
    assert new is not None
    assert [s.spec.id for s in old.steps] == [
        "load_chapter",
        "expand_content",
        "check_consistency",
        "save_expansion",
    ]
    assert [s.spec.id for s in new.steps] == ["load_chapter"]
    assert await store.compiled_workflow(CHAPTER, 3) is None
    assert (await store.catalog()).workflows[CHAPTER].steps == new.steps


@pytest.mark.asyncio
async def test_an_uncommitted_leftover_is_invisible_and_blocks_nothing(mongo_db: Db) -> None:
    store = await _registered(mongo_db)
    # What a registrar that crashed between its insert and its commit leaves behind.
    leftover = _changed("workflow", CHAPTER, description="crashed").data
    await mongo_db["definitions"].insert_one(
        {
            "_id": f"workflow:{CHAPTER}:2",
            "kind": "workflow",
            "id": CHAPTER,
            "version": 2,
            "hash": "x",
            "document": leftover,
            "committed": False,
        }
    )
    catalog = await store.catalog()
    assert catalog.version("workflow", CHAPTER) == 1
    assert catalog.workflows[CHAPTER].spec.description != "crashed"
    assert await store.document("workflow", CHAPTER, 2) is None
    assert await store.compiled_workflow(CHAPTER, 2) is None

    [result] = await store.register([_changed("workflow", CHAPTER, description="again")])
    assert result == ItemResult("workflow", CHAPTER, 3, changed=True)
    catalog = await store.catalog()
    assert catalog.version("workflow", CHAPTER) == 3
    assert catalog.workflows[CHAPTER].spec.description == "again"


@pytest.mark.asyncio
async def test_concurrent_changes_to_one_workflow_both_get_versions(mongo_db: Db) -> None:
    store = await _registered(mongo_db)
    first, second = await asyncio.gather(
        store.register([_changed("workflow", CHAPTER, description="one")]),
        store.register([_changed("workflow", CHAPTER, description="two")]),
    )
    assert sorted([first[0].version, second[0].version]) == [2, 3]
    assert first[0].changed
    assert second[0].changed
    winner = "one" if first[0].version == 3 else "two"
    catalog = await store.catalog()
    assert catalog.version("workflow", CHAPTER) == 3
    assert catalog.workflows[CHAPTER].spec.description == winner
    # The loser's attempt cleaned up after itself.
    assert await _count(mongo_db, committed=False) == 0


@pytest.mark.asyncio
async def test_many_concurrent_changes_each_get_a_version(mongo_db: Db) -> None:
    store = await _registered(mongo_db)
    changes = [_changed("workflow", CHAPTER, description=f"change {n}") for n in range(4)]
    results = await asyncio.gather(*(store.register([change]) for change in changes))
    assert sorted(items[0].version for items in results) == [2, 3, 4, 5]
    assert (await store.catalog()).version("workflow", CHAPTER) == 5


@pytest.mark.asyncio
async def test_concurrent_identical_bundles_register_once(mongo_db: Db) -> None:
    store = await _store(mongo_db)
    results = await asyncio.gather(*(store.register(_examples()) for _ in range(3)))
    for items in results:
        assert all(r.version == 1 for r in items)
    assert sum(r.changed for items in results for r in items) == 6
    assert await _count(mongo_db) == 6


@pytest.mark.asyncio
async def test_catalog_is_one_round_trip(mongo_db: Db, mongodb: MongoDeployment) -> None:
    store = await _registered(mongo_db)
    await store.register([_changed("workflow", CHAPTER, description="2")])
    # More items than a default first batch (101) holds.
    schema = _example("schema", "blob_output_schema_v1").data
    await store.register(
        [SourceDocument("schema", f"s{n}", {**schema, "id": f"extra_{n}"}) for n in range(150)]
    )
    commands = CommandLog()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb.url, event_listeners=[commands], timeoutMS=10000
    )
    try:
        store = DefinitionStore(client[mongo_db.name])
        await client.admin.command("ping")
        commands.names.clear()
        catalog = await store.catalog()
        assert commands.names == ["aggregate"]
    finally:
        await client.close()
    assert catalog.version("workflow", CHAPTER) == 2
    assert len(catalog.hashes) == 156


def _id(document: SourceDocument) -> str:
    data = document.data["provider"] if document.kind == "provider" else document.data
    return str(data["id"])
