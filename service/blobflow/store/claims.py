"""Claims: how a worker takes executions nobody holds, atomically.

An execution is free when it is pending with no lease, or its lease ran out:
a parked execution, or one whose owner died. Expiry is decided on the
database server's clock, inside the update, so workers claiming at once
never take the same execution: each reads back only what carries its own
claim token. A claim starts a new lease epoch, which fences out the previous
owner's writes (`blobflow.store.fencing`).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from blobflow.core.leases import Claimed, Lease
from blobflow.core.records import Execution, from_document, now
from blobflow.store.fencing import BY_ID, NOW_MS

Document = dict[str, Any]
logger = logging.getLogger(__name__)


class Claims:
    def __init__(self, executions: AsyncCollection[Document], *, lease_ms: int) -> None:
        self.executions = executions
        self.lease_ms = lease_ms

    async def one(self, execution_id: str, owner: str) -> tuple[Execution, Lease] | None:
        """Take a pending execution, or a running one whose lease expired."""
        token = uuid.uuid4().hex
        took = _expired_on_server()
        claimed = await self.executions.find_one_and_update(
            {"_id": execution_id, "status": {"$in": ["pending", "running"]}},
            [
                {
                    "$set": {
                        "status": {"$cond": [took, "running", "$status"]},
                        "started_at": {
                            "$cond": [took, {"$ifNull": ["$started_at", "$$NOW"]}, "$started_at"]
                        },
                        "lease": {"$cond": [took, self._new_lease(owner, token), "$lease"]},
                    }
                }
            ],
            projection={"logs": False},
            return_document=ReturnDocument.AFTER,
            hint=BY_ID,
        )
        if claimed is None or claimed["lease"].get("claim") != token:
            return None
        return from_document(claimed), Lease(execution_id, owner, claimed["lease"]["epoch"])

    def _new_lease(self, owner: str, token: str) -> Document:
        return {
            "owner": {"$literal": owner},
            "epoch": {"$add": [{"$ifNull": ["$lease.epoch", 0]}, 1]},
            "expires_ms": {"$add": [NOW_MS, self.lease_ms]},
            "claim": token,
        }

    async def many(self, owner: str, limit: int) -> Claimed:
        """Take up to `limit` executions no live worker holds, highest priority first,
        oldest first within a priority; three round trips however many.

        `more` says there were `limit` candidates: some may have gone to another
        worker racing for them, and more may be left.

        Candidates are read on this worker's clock; the update decides on the
        server's, document by document, so workers claiming at once never take
        the same execution: each reads back only what carries its claim token.
        """
        if limit <= 0:
            return Claimed([], more=False)
        expired_here = {"$lt": int(now().timestamp() * 1000)}
        candidates = self.executions.find(
            {"status": {"$in": ["pending", "running"]}, "lease.expires_ms": expired_here},
            {"_id": True},
            sort=[("priority", DESCENDING), ("created_at", ASCENDING)],
            limit=limit,
            hint="claim",
        )
        ids = [document["_id"] async for document in candidates]
        if not ids:
            return Claimed([], more=False)
        token = uuid.uuid4().hex
        took = _expired_on_server()
        await self.executions.update_many(
            {"_id": {"$in": ids}, "status": {"$in": ["pending", "running"]}},
            [{"$set": {"lease": {"$cond": [took, self._new_lease(owner, token), "$lease"]}}}],
            hint=BY_ID,
        )
        claimed = self.executions.find(
            {"_id": {"$in": ids}, "lease.claim": token}, {"logs": False}, hint=BY_ID
        )
        taken = {}
        async for document in claimed:
            try:
                execution = from_document(document)
            except (KeyError, TypeError, ValueError) as exc:
                # One unreadable record must not stop every replica that claims it.
                logger.error("execution %s cannot be read, skipped: %r", document["_id"], exc)
                continue
            taken[execution.id] = (
                execution,
                Lease(execution.id, owner, document["lease"]["epoch"]),
            )
        leased = [taken[execution_id] for execution_id in ids if execution_id in taken]
        return Claimed(leased, more=len(ids) == limit)


def _expired_on_server() -> Document:
    """Whether the lease has run out on the server's clock; a pending execution that
    never had one counts as expired.

    In the update rather than the filter: a top-level `$expr` keeps SecantusDB
    from using any index, so every claim would scan the whole collection.
    """
    return {"$lt": [{"$ifNull": ["$lease.expires_ms", 0]}, NOW_MS]}
