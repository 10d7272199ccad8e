"""Registrations take turns on the registry's head, and every change is counted."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.sources import SourceDocument, read_paths
from blobflow.errors import DefinitionError, RegistrationConflict
from blobflow.store.definitions import DefinitionStore
from blobflow.store.registry_head import RegistryHead
from tests.support import ROOT

Db = AsyncDatabase[dict[str, Any]]


def examples() -> dict[str, SourceDocument]:
    documents, problems = read_paths([ROOT])
    assert problems == []
    return {str(document.item_id): document for document in documents}


async def store_of(db: Db) -> DefinitionStore:
    store = DefinitionStore(db)
    await store.ensure_indexes()
    return store


@pytest.mark.asyncio
@pytest.mark.parametrize("rounds", range(3))
async def test_two_bundles_valid_alone_but_not_together_never_both_apply(
    mongo_db: Db, rounds: int
) -> None:
    store = await store_of(mongo_db)
    items = examples()
    schema = copy.deepcopy(items["blob_input_schema_v1"].data)
    schema["id"] = "fresh_input"
    await store.register([*items.values(), SourceDocument("schema", "s.yaml", schema)])
    # Alone, each is valid: a new workflow taking `fresh_input` as its input, and
    # `fresh_input` turned into an output schema (no workflow uses it yet).
    workflow = copy.deepcopy(items["blob_processing_workflow"].data)
    workflow["id"] = "fresh_workflow"
    workflow["input_schema_id"] = "fresh_input"
    as_output = {**schema, "type": "output"}

    outcomes = await asyncio.gather(
        store.register([SourceDocument("workflow", "w.yaml", workflow)]),
        store.register([SourceDocument("schema", "s.yaml", as_output)]),
        return_exceptions=True,
    )

    refused = [o for o in outcomes if isinstance(o, DefinitionError)]
    assert len(refused) == 1, outcomes  # the second is checked against the first
    assert "fresh_input" in str(refused[0])
    catalog = await store.catalog()  # the registered state always loads
    assert ("fresh_workflow" in catalog.workflows) == isinstance(outcomes[1], DefinitionError)


@pytest.mark.asyncio
async def test_each_registration_that_changes_something_bumps_the_head(mongo_db: Db) -> None:
    store = await store_of(mongo_db)
    assert await store.head_version() == 0
    documents = list(examples().values())
    await store.register(documents)
    assert await store.head_version() == 1
    await store.register(documents)  # the same again changes nothing
    assert await store.head_version() == 1
    renamed = copy.deepcopy(examples()["blob_processing_workflow"].data)
    renamed["name"] = "Renamed"
    await store.register([SourceDocument("workflow", "w.yaml", renamed)])
    assert await store.head_version() == 2


@pytest.mark.asyncio
async def test_a_registrar_waits_its_turn_and_gives_up_with_a_conflict(mongo_db: Db) -> None:
    head = RegistryHead(mongo_db["registry"], lease_ms=60_000)
    order: list[str] = []

    async with head.held() as first:
        waiting = asyncio.ensure_future(_hold(head, order))
        await asyncio.sleep(0.1)
        assert order == []  # the second waits while the first holds it
        order.append("first done")
        assert first
    await asyncio.wait_for(waiting, timeout=5)
    assert order == ["first done", "second"]

    async with head.held():
        with pytest.raises(RegistrationConflict):
            async with head.held(wait_s=0.2):
                pass


@pytest.mark.asyncio
async def test_a_lease_left_by_a_dead_registrar_expires(mongo_db: Db) -> None:
    head = RegistryHead(mongo_db["registry"], lease_ms=200)
    holder = head.held()
    await holder.__aenter__()  # taken and never given back, as by a killed process
    async with head.held(wait_s=5):
        pass


async def _hold(head: RegistryHead, order: list[str]) -> None:
    async with head.held():
        order.append("second")
