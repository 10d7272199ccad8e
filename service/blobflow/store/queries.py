"""What the HTTP API reads: execution listings, logs and blob histories.

Every listing is one indexed find (sorted newest first, with `_id` breaking
ties so pages never overlap) plus one count over the same filter; the indexes
are declared by `ExecutionStore.ensure_indexes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from blobflow.core.listings import LIST_FILTERS, SUMMARY_FIELDS, ExecutionLogs, Page
from blobflow.store.translation import translate_errors

Document = dict[str, Any]
NEWEST_FIRST = [("created_at", DESCENDING), ("_id", DESCENDING)]


# Most selective first: with several filters, the listing walks the index of
# the first one present and checks the others on the documents it finds.
# Named outright, because a planner may otherwise scan the collection
# (SecantusDB does, for two equality filters).
SELECTIVITY = ("blob_id", "user_id", "workflow_id", "provider_id", "status")


def listing_index(query: Mapping[str, Any]) -> str:
    """The name of the index (see `ExecutionStore.ensure_indexes`) a listing walks."""
    for name in SELECTIVITY:
        if name in query:
            return f"list_{name}"
    return "list_all"


@translate_errors
class Queries:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.executions = db["executions"]
        self.deltas = db["deltas"]
        self.blob_owners = db["blob_owners"]

    async def executions_page(self, filters: Mapping[str, str], *, limit: int, offset: int) -> Page:
        query = {name: value for name, value in filters.items() if name in LIST_FILTERS}
        hint = listing_index(query)
        cursor = self.executions.find(
            query,
            dict.fromkeys(SUMMARY_FIELDS, True),
            sort=NEWEST_FIRST,
            skip=offset,
            limit=limit,
            hint=hint,
        )
        items = [document async for document in cursor]
        total = await self.executions.count_documents(query, hint=hint)
        return Page(items, total)

    async def claim_blob(self, blob_id: str, user_id: str) -> bool:
        """Whether `user_id` may run by hand on `blob_id`, claiming it if nobody has.

        A blob belongs to the user whose executions ran on it. One that no execution
        has touched yet goes to the first user to claim it, decided by a unique
        `_id` in `blob_owners`: two users racing for a new blob id never both get it.
        """
        found = await self.executions.find_one(
            {"blob_id": blob_id, "user_id": {"$ne": user_id}},
            {"_id": True},
            hint=listing_index({"blob_id": blob_id}),
        )
        if found is not None:
            return False
        try:
            await self.blob_owners.insert_one({"_id": blob_id, "user_id": user_id})
        except DuplicateKeyError:
            owner = await self.blob_owners.find_one({"_id": blob_id})
            return owner is None or owner.get("user_id") == user_id
        return True

    async def pending_manual_runs(self, user_id: str) -> int:
        """How many runs started by hand for `user_id` still wait to start."""
        query = {"user_id": user_id, "status": "pending", "event_id": {"$regex": "^manual:"}}
        return await self.executions.count_documents(
            query, hint=listing_index({"user_id": user_id})
        )

    async def execution_logs(self, execution_id: str) -> ExecutionLogs | None:
        document = await self.executions.find_one(
            {"_id": execution_id},
            {"workflow_id": True, "user_id": True, "logs": True, "logs_dropped": True},
        )
        if document is None:
            return None
        lines = list(document.get("logs") or ())
        dropped = document.get("logs_dropped") or 0
        if dropped and lines:
            # The store kept the first half and the newest lines: say what went between.
            head = len(lines) // 2
            gap = {
                "timestamp": lines[head]["timestamp"],
                "level": "warning",
                "step_id": None,
                "message": f"… {dropped} log lines dropped here: an execution keeps its "
                f"first {head} and its last {len(lines) - head} lines",
            }
            lines.insert(head, gap)
        return ExecutionLogs(document["workflow_id"], document["user_id"], lines)

    async def blob_deltas(
        self, blob_id: str, *, user_id: str | None, limit: int, offset: int
    ) -> Page:
        """The blob's deltas by version; only those of `user_id`'s executions when given."""
        query: Document = {"blob_id": blob_id}
        if user_id is not None:
            query["user_id"] = user_id
        cursor = self.deltas.find(query, sort=[("version", ASCENDING)], skip=offset, limit=limit)
        items = [document async for document in cursor]
        total = await self.deltas.count_documents(query)
        return Page(items, total)
