"""Each blob's delta history: deltas stored exactly once, with gapless versions.

Per-blob versions are gapless without a counter: deltas are inserted in
order with versions max+1, max+2, … under a unique (blob_id, version) index.
A version can only be stored once its predecessor exists, so a crash or a
race leaves no gap; the loser of a race re-reads the maximum and goes on.
A delta's id is `<execution_id>:<index>`, so a resumed run finds, rather
than repeats, what an interrupted one stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from blobflow.core.deltas import DeltaDraft, delta_document
from blobflow.core.records import Execution
from blobflow.errors import BlobflowError, UnstorableError
from blobflow.store.translation import UNENCODABLE

Document = dict[str, Any]
MAX_VERSION_RETRIES = 100


class DeltaHistory:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db["deltas"]

    async def ensure_indexes(self) -> None:
        await self.collection.create_indexes(
            [
                IndexModel(
                    [("blob_id", ASCENDING), ("version", ASCENDING)],
                    unique=True,
                    name="blob_version",
                ),
                IndexModel([("execution_id", ASCENDING)], name="execution"),
            ]
        )

    async def store(self, execution: Execution, drafts: Sequence[DeltaDraft]) -> list[Document]:
        """Store the execution's deltas exactly once, with gapless per-blob versions."""
        documents = [delta_document(execution, index, draft) for index, draft in enumerate(drafts)]
        pending = documents
        stored_before = False
        for _ in range(MAX_VERSION_RETRIES):
            if not pending:
                break
            latest = await self.collection.find_one(
                {"blob_id": execution.blob_id}, {"version": True}, sort=[("version", DESCENDING)]
            )
            version = latest["version"] if latest else 0
            for offset, document in enumerate(pending):
                document["version"] = version + offset + 1
            try:
                await self.collection.insert_many(pending, ordered=True)
                pending = []
            except UNENCODABLE as exc:
                raise UnstorableError(str(exc)) from exc
            except BulkWriteError as exc:
                pending, existed = await self._after_conflict(execution, pending, exc)
                stored_before = stored_before or existed
        else:
            raise BlobflowError(f"could not store deltas for blob {execution.blob_id!r}")
        if not stored_before:
            return documents
        # Some were stored by an earlier attempt: what counts is what is stored.
        stored = self.collection.find({"execution_id": execution.id})
        by_id = {document["_id"]: document async for document in stored}
        return [by_id[document["_id"]] for document in documents]

    async def _after_conflict(
        self, execution: Execution, pending: list[Document], exc: BulkWriteError
    ) -> tuple[list[Document], bool]:
        """What is left to insert, and whether some of it had been stored before."""
        errors = exc.details.get("writeErrors") or []
        if not errors or errors[0].get("code") != 11000:
            raise exc
        rest = pending[errors[0]["index"] :]
        if "_id" not in (errors[0].get("keyPattern") or {}):
            return rest, False  # another execution took the version: go again from the new max
        # Stored before, by an earlier attempt at this execution: keep what exists.
        existing = {d["_id"] async for d in self._delta_ids(execution.id)}
        return [document for document in rest if document["_id"] not in existing], True

    def _delta_ids(self, execution_id: str) -> Any:
        return self.collection.find({"execution_id": execution_id}, {"_id": True})

    async def of(self, execution_id: str) -> list[Document]:
        cursor = self.collection.find({"execution_id": execution_id}, sort=[("version", ASCENDING)])
        return [document async for document in cursor]
