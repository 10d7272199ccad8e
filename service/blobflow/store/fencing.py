"""Writes to running executions, fenced by the lease of the worker that runs them.

The filter of every such write names the owner and epoch, so a worker that
lost its lease (paused, partitioned, slow) matches nothing and learns it must
stop. Checkpoints of concurrent executions leave as one `update` command
(group commit): a busy worker sends one round trip for many steps.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from blobflow.core.leases import Lease
from blobflow.errors import LeaseLost, UnstorableError
from blobflow.group_commit import GroupCommit
from blobflow.store.translation import UNENCODABLE

Document = dict[str, Any]
NOW_MS: Document = {"$toLong": "$$NOW"}
# Every fenced filter names the `_id`. The hint costs MongoDB nothing and spares
# servers that plan each statement over every index (SecantusDB) the planning:
# about 2 ms of a 5 ms checkpoint there.
BY_ID = "_id_"


def fence(lease: Lease) -> Document:
    """What a write under `lease` matches: the execution, while this lease holds it."""
    return {"_id": lease.execution_id, "lease.owner": lease.owner, "lease.epoch": lease.epoch}


def quiet(lease: Lease) -> Document:
    """The fence, and no cancel requested: what the usual write matches."""
    return {**fence(lease), "cancel_requested": {"$ne": True}}


@dataclass(frozen=True, slots=True)
class _Write:
    lease: Lease
    fields: Document  # a `$set` stage's fields


class FencedWrites:
    """Fenced updates of the `executions` collection; True from each: cancel requested.

    A write that matches nothing under the quiet filter is tried again on the
    lease alone, to tell a requested cancel from a lost lease (`LeaseLost`).
    So a cancel the owner never heard of directly still stops the run, at its
    next checkpoint or heartbeat.
    """

    def __init__(self, executions: AsyncCollection[Document], *, max_batch: int = 64) -> None:
        self.executions = executions
        self._checkpoints = GroupCommit(self._flush, max_batch=max_batch)

    async def checkpoint(self, lease: Lease, fields: Document) -> bool:
        """Set `fields` (a `$set` stage) while `lease` holds, with concurrent checkpoints."""
        return await self._checkpoints.submit(_Write(lease, fields))

    async def update(self, lease: Lease, fields: Document) -> bool:
        """Set `fields` while `lease` holds, alone: one round trip, two on a miss."""
        try:
            result = await self.executions.update_one(quiet(lease), [{"$set": fields}], hint=BY_ID)
        except UNENCODABLE as exc:
            raise UnstorableError(str(exc)) from exc
        if result.matched_count == 1:
            return False
        return await self._on_lease_alone(lease, fields)

    async def _on_lease_alone(self, lease: Lease, fields: Document) -> bool:
        result = await self.executions.update_one(fence(lease), [{"$set": fields}], hint=BY_ID)
        if result.matched_count == 0:
            raise LeaseLost(f"execution {lease.execution_id} is no longer owned by {lease.owner}")
        return True

    async def _flush(self, writes: Sequence[_Write]) -> list[bool | Exception]:
        """One `update` command for the first write of each execution; a later write
        of one already in the batch goes alone, after it, so their order holds (an
        unordered batch has none, and each execution keeps one mark)."""
        firsts: list[int] = []
        repeats: list[int] = []
        seen: set[str] = set()
        for index, write in enumerate(writes):
            execution_id = write.lease.execution_id
            (repeats if execution_id in seen else firsts).append(index)
            seen.add(execution_id)
        outcomes: dict[int, bool | Exception] = dict(
            zip(firsts, await self._together([writes[i] for i in firsts]), strict=True)
        )
        for index in repeats:
            try:
                outcomes[index] = await self.update(writes[index].lease, writes[index].fields)
            except Exception as exc:
                outcomes[index] = exc
        return [outcomes[index] for index in range(len(writes))]

    async def _together(self, writes: Sequence[_Write]) -> list[bool | Exception]:
        """One `update` command for all; the rare miss is sorted out write by write.

        Each write also stamps a mark of its own, so after a partial match
        the marks read back tell which writes landed: the others are tried
        alone, and none is applied twice (log lines are appended).
        """
        batch = uuid.uuid4().hex
        marks = [f"{batch}.{index}" for index in range(len(writes))]
        operations = [
            UpdateOne(
                quiet(write.lease), [{"$set": {**write.fields, "lease.write": mark}}], hint=BY_ID
            )
            for write, mark in zip(writes, marks, strict=True)
        ]
        try:
            result = await self.executions.bulk_write(operations, ordered=False)
            if result.matched_count == len(writes):
                return [False] * len(writes)
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                raise  # applied, perhaps not durably: not a checkpoint to count on
            # Some may have landed besides the ones that failed: read back below.
        except UNENCODABLE:
            pass  # found while encoding: the writes before it may have been sent
        landed = await self._marks([write.lease.execution_id for write in writes])
        outcomes: list[bool | Exception] = []
        for write, mark in zip(writes, marks, strict=True):
            if landed.get(write.lease.execution_id) == mark:
                outcomes.append(False)
                continue
            try:
                outcomes.append(await self.update(write.lease, write.fields))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    async def _marks(self, execution_ids: list[str]) -> dict[str, str | None]:
        cursor = self.executions.find({"_id": {"$in": execution_ids}}, {"lease.write": True})
        return {
            document["_id"]: (document.get("lease") or {}).get("write") async for document in cursor
        }
