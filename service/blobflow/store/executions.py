"""MongoDB persistence of executions and their logs; deltas go to `delta_history`.

Every write to a running execution is fenced by its lease: the filter names
the owner and epoch, so a worker that lost its lease (paused, partitioned,
slow) matches nothing and learns it must stop. Lease expiry is computed on
the server's clock. No multi-document transactions: each write is safe to
repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, OperationFailure

from blobflow.core.deltas import DeltaDraft
from blobflow.core.leases import Claimed, Lease
from blobflow.core.listings import LIST_FILTERS
from blobflow.core.records import (
    Execution,
    LogLine,
    from_document,
    log_document,
    mutable_fields,
    now,
    to_document,
)
from blobflow.errors import UnstorableError
from blobflow.store.claims import Claims
from blobflow.store.delta_history import DeltaHistory
from blobflow.store.fencing import NOW_MS, FencedWrites, fence
from blobflow.store.translation import UNENCODABLE, translate_errors

Document = dict[str, Any]
logger = logging.getLogger(__name__)
INDEX_NOT_FOUND = 27  # MongoDB's IndexNotFound
_LISTINGS: dict[str, list[tuple[str, int]]] = {
    "all": [],
    **{name: [(name, ASCENDING)] for name in LIST_FILTERS},
}


@translate_errors
class ExecutionStore:
    def __init__(
        self, db: AsyncDatabase[Document], *, lease_ms: int = 15_000, max_logs: int = 5_000
    ) -> None:
        self.executions = db["executions"]
        self.fenced = FencedWrites(self.executions)
        self.claims = Claims(self.executions, lease_ms=lease_ms)
        self.history = DeltaHistory(db)
        self.lease_ms = lease_ms
        self.max_logs = max_logs

    async def ensure_indexes(self) -> None:
        # One index per query the engine and the API make.
        await self.executions.create_indexes(
            [
                IndexModel(
                    [
                        ("event_id", ASCENDING),
                        ("provider_id", ASCENDING),
                        ("workflow_id", ASCENDING),
                    ],
                    unique=True,
                    name="event_binding",
                ),
                # The API's listings: each filter, newest first, `_id` breaking ties.
                *(
                    IndexModel(
                        [*keys, ("created_at", DESCENDING), ("_id", DESCENDING)],
                        name=f"list_{name}",
                    )
                    for name, keys in _LISTINGS.items()
                ),
                # What to claim next: equality, sort, range.
                IndexModel(
                    [
                        ("status", ASCENDING),
                        ("priority", DESCENDING),
                        ("created_at", ASCENDING),
                        ("lease.expires_ms", ASCENDING),
                    ],
                    name="claim",
                ),
                IndexModel(
                    [("completed_at", ASCENDING)],
                    partialFilterExpression={"status": "completed", "deltas_published": False},
                    name="unpublished",
                ),
            ]
        )
        await self.history.ensure_indexes()
        # Every index costs each checkpoint a key computation; "lease" served no query.
        if "lease" in await self.executions.index_information():
            try:
                await self.executions.drop_index("lease")
            except OperationFailure as exc:
                if exc.code != INDEX_NOT_FOUND:
                    raise  # else another replica starting at once dropped it first

    async def create_many(self, executions: Sequence[Execution], owner: str) -> list[Lease]:
        """Insert executions leased to `owner`, in one round trip; skip those that exist.

        They stay pending, so the API shows them queued, but other workers
        leave them alone until the lease runs out.
        """
        expires_ms = int(now().timestamp() * 1000) + self.lease_ms
        lease = {"owner": owner, "epoch": 1, "expires_ms": expires_ms}
        new = await self._insert_new(executions, lease)
        return [Lease(e.id, owner, 1) for e in executions if e.id in new]

    async def park_many(self, executions: Sequence[Execution]) -> set[str]:
        """Insert executions nobody holds, for any worker to claim (`claim_many`); skip
        those that exist. The ids that were new."""
        return await self._insert_new(executions, {"owner": None, "epoch": 0, "expires_ms": 0})

    async def _insert_new(self, executions: Sequence[Execution], lease: Document) -> set[str]:
        """Insert in one round trip; the ids that were not there yet."""
        if not executions:
            return set()
        documents = []
        for execution in executions:
            document = to_document(execution)
            document["logs"] = []
            document["lease"] = dict(lease)
            documents.append(document)
        existing: set[str] = set()
        try:
            await self.executions.insert_many(documents, ordered=False)
        except UNENCODABLE as exc:
            # Checked before anything is sent: nothing was inserted.
            raise UnstorableError(str(exc)) from exc
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors") or []
            # Only duplicates mean "stored before"; after a write-concern error the
            # inserts may not last, so they do not count as stored.
            if exc.details.get("writeConcernErrors") or any(
                error.get("code") != 11000 for error in errors
            ):
                raise
            existing = {documents[error["index"]]["_id"] for error in errors}
        return {e.id for e in executions} - existing

    async def claim(self, execution_id: str, owner: str) -> tuple[Execution, Lease] | None:
        """Take a pending execution, or a running one whose lease expired."""
        return await self.claims.one(execution_id, owner)

    async def claim_many(self, owner: str, limit: int) -> Claimed:
        """Take up to `limit` executions no live worker holds (see `Claims.many`)."""
        return await self.claims.many(owner, limit)

    async def checkpoint(
        self, lease: Lease, execution: Execution, logs: Sequence[LogLine] = ()
    ) -> bool:
        """Write the execution's state and new log lines, renewing the lease; fenced.

        True when a cancel has been requested: the caller must stop the run.
        """
        fields = {key: {"$literal": value} for key, value in mutable_fields(execution).items()}
        fields["lease.expires_ms"] = {"$add": [NOW_MS, self.lease_ms]}
        if logs:
            fields.update(self._append_logs(logs))
        return await self.fenced.checkpoint(lease, fields)

    def _append_logs(self, logs: Sequence[LogLine]) -> Document:
        """`$set` fields appending `logs`, capped at `max_logs` lines: the first half is
        kept (how the run began) and the newest lines (how it ended); `logs_dropped`
        counts what went from between them (`Queries.execution_logs` marks the gap)."""
        new = {"$literal": [log_document(line) for line in logs]}
        merged = {"$concatArrays": [{"$ifNull": ["$logs", []]}, new]}
        head = self.max_logs // 2
        over = {"$subtract": [{"$size": "$$merged"}, self.max_logs]}
        kept = {
            "$cond": [
                {"$gt": [over, 0]},
                {
                    "$concatArrays": [
                        {"$slice": ["$$merged", head]},
                        {"$slice": ["$$merged", -(self.max_logs - head)]},
                    ]
                },
                "$$merged",
            ]
        }
        dropped = {"$add": [{"$ifNull": ["$logs_dropped", 0]}, {"$max": [over, 0]}]}
        return {
            "logs": {"$let": {"vars": {"merged": merged}, "in": kept}},
            "logs_dropped": {"$let": {"vars": {"merged": merged}, "in": dropped}},
        }

    async def renew(self, lease: Lease) -> bool:
        """Extend the lease of a running execution; fenced; True when a cancel was requested."""
        return await self.fenced.update(
            lease, {"lease.expires_ms": {"$add": [NOW_MS, self.lease_ms]}}
        )

    async def release(self, leases: Sequence[Lease]) -> None:
        """Hand executions back at once, for any worker to claim (fenced)."""
        for lease in leases:
            await self.executions.update_one(fence(lease), {"$set": {"lease.expires_ms": 0}})

    async def request_cancel(self, execution_id: str) -> bool:
        """Record that the execution must be cancelled; False when it has finished."""
        result = await self.executions.update_one(
            {"_id": execution_id, "status": {"$in": ["pending", "running"]}},
            {"$set": {"cancel_requested": True}},
        )
        return result.matched_count == 1

    async def get_with_owner(self, execution_id: str) -> tuple[Execution, str | None] | None:
        """The execution and the worker holding a live lease on it, if any.

        Live on the server's clock, as `claim` decides: a worker with a skewed
        clock must not think a dead owner alive, or a live one dead.
        """
        live = {"$gt": [{"$ifNull": ["$lease.expires_ms", 0]}, NOW_MS]}
        pipeline: list[Document] = [
            {"$match": {"_id": execution_id}},
            {"$project": {"logs": False}},
            {"$addFields": {"lease_live": live}},
        ]
        async for document in await self.executions.aggregate(pipeline):
            owner = (document.get("lease") or {}).get("owner")
            return from_document(document), owner if document["lease_live"] else None
        return None

    async def get(self, execution_id: str) -> Execution | None:
        document = await self.executions.find_one({"_id": execution_id}, {"logs": False})
        return None if document is None else from_document(document)

    async def store_deltas(
        self, execution: Execution, drafts: Sequence[DeltaDraft]
    ) -> list[Document]:
        """Store the execution's deltas exactly once, with gapless per-blob versions."""
        return await self.history.store(execution, drafts)

    async def unpublished(self, limit: int = 100) -> list[Execution]:
        """Completed executions whose delta events were not all published."""
        cursor = self.executions.find(
            {"status": "completed", "deltas_published": False},
            {"logs": False},
            sort=[("completed_at", ASCENDING)],
            limit=limit,
            # SecantusDB would scan every completed execution through the "claim"
            # index: this partial index holds only the unpublished ones.
            hint="unpublished",
        )
        return [from_document(document) async for document in cursor]

    async def deltas_of(self, execution_id: str) -> list[Document]:
        return await self.history.of(execution_id)

    async def mark_published(self, execution_id: str) -> None:
        await self.executions.update_one(
            {"_id": execution_id}, {"$set": {"deltas_published": True}}
        )
