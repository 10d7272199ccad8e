"""The API's listings walk an index, never the whole collection (checked with explain)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import combinations
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.listings import LIST_FILTERS
from blobflow.store.executions import ExecutionStore
from blobflow.store.queries import NEWEST_FIRST, listing_index

Db = AsyncDatabase[dict[str, Any]]


def stages(plan: Any) -> Iterator[str]:
    """Every `stage` in an explain document, whatever its nesting (MongoDB versions differ)."""
    if isinstance(plan, dict):
        if isinstance(plan.get("stage"), str):
            yield plan["stage"]
        for value in plan.values():
            yield from stages(value)
    elif isinstance(plan, list):
        for value in plan:
            yield from stages(value)


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ({}, "list_all"),
        ({"status": "failed"}, "list_status"),
        ({"status": "failed", "workflow_id": "w"}, "list_workflow_id"),
        ({"user_id": "u", "blob_id": "b"}, "list_blob_id"),
        ({"provider_id": "p", "status": "failed", "user_id": "u"}, "list_user_id"),
    ],
)
def test_the_most_selective_filter_picks_the_index(query: dict[str, str], index: str) -> None:
    assert listing_index(query) == index


ALL_QUERIES = [
    dict.fromkeys(names, "x")
    for size in range(len(LIST_FILTERS) + 1)
    for names in combinations(LIST_FILTERS, size)
]


@pytest.mark.asyncio
async def test_every_filter_combination_is_served_by_an_index(
    mongo_db: Db, subtests: pytest.Subtests
) -> None:
    await ExecutionStore(mongo_db).ensure_indexes()
    documents = [
        {
            "_id": f"e{n}",
            "event_id": f"v{n}",
            "provider_id": "p",
            "workflow_id": "w",
            "created_at": n,
        }
        for n in range(20)
    ]
    await mongo_db.executions.insert_many(documents)
    sort = dict(NEWEST_FIRST)
    for query in ALL_QUERIES:
        with subtests.test(query=query):
            hint = listing_index(query)
            find = {"find": "executions", "filter": query, "sort": sort, "limit": 50, "hint": hint}
            found = set(stages(await mongo_db.command("explain", find)))
            assert "IXSCAN" in found
            assert "COLLSCAN" not in found
            count = {"count": "executions", "query": query, "hint": hint}
            counted = set(stages(await mongo_db.command("explain", count)))
            assert "COLLSCAN" not in counted
