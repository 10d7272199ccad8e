"""`MemoryExecutionStore`: executions and deltas kept as `blobflow.store` keeps them
in MongoDB, in a dict.

Leases are fenced by owner and epoch, cancel requests are reported by every fenced
write, executions nobody holds can be claimed, deltas are stored once with gapless
per-blob versions. Documents round-trip as BSON would (`bson_roundtrip`: tuples become
lists, datetimes keep milliseconds, integers beyond 64 bits are refused with
`UnstorableError`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from blobflow.core.deltas import DeltaDraft, delta_document
from blobflow.core.leases import Claimed, Lease
from blobflow.core.records import (
    Execution,
    LogLine,
    from_document,
    mutable_fields,
    now,
    to_document,
)
from blobflow.errors import LeaseLost, UnstorableError

Document = dict[str, Any]

_INT64 = range(-(2**63), 2**63)
# The lease of an execution nobody holds: expired on any clock.
_FREE = -math.inf


class ManualClock:
    """A clock that moves only when told to; pass it as `MemoryExecutionStore(clock=...)`."""

    def __init__(self, start_s: float = 0.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


class MemoryExecutionStore:
    """`blobflow.runtime.ports.ExecutionStore` in a dict, with MongoDB's semantics.

    Lease expiry is measured on `clock` (seconds, `time.monotonic` unless
    given). `logs(execution_id)` and `deltas` let tests read what was written.
    Every method is atomic: none awaits anything.
    """

    def __init__(
        self,
        *,
        lease_ms: int = 15_000,
        max_logs: int = 5_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease_ms = lease_ms
        self.max_logs = max_logs
        self.clock = clock
        self.executions: dict[str, Document] = {}  # as MongoDB holds them, lease included
        self._logs: dict[str, list[LogLine]] = {}
        self.deltas: dict[str, Document] = {}  # by `_id`, in insertion order

    # -- leases --

    def _now_ms(self) -> float:
        return self.clock() * 1000

    def _lease(self, owner: str | None, epoch: int) -> Document:
        expires = _FREE if owner is None else self._now_ms() + self.lease_ms
        return {"owner": owner, "epoch": epoch, "expires_ms": expires}

    def _expired(self, document: Document) -> bool:
        return bool(document["lease"]["expires_ms"] < self._now_ms())

    def _fenced(self, lease: Lease) -> Document:
        """The execution while `lease` holds it; else `LeaseLost`, as a fenced write."""
        document = self.executions.get(lease.execution_id)
        if (
            document is None
            or document["lease"]["owner"] != lease.owner
            or document["lease"]["epoch"] != lease.epoch
        ):
            raise LeaseLost(f"execution {lease.execution_id} is no longer owned by {lease.owner}")
        return document

    def owner_of(self, execution_id: str) -> tuple[str | None, int]:
        """Who holds the execution's lease (live or not) and its epoch."""
        lease = self.executions[execution_id]["lease"]
        return lease["owner"], lease["epoch"]

    # -- ExecutionStore --

    async def create_many(self, executions: Sequence[Execution], owner: str) -> list[Lease]:
        new = self._insert_new(executions, owner=owner, epoch=1)
        return [Lease(e.id, owner, 1) for e in executions if e.id in new]

    async def park_many(self, executions: Sequence[Execution]) -> set[str]:
        return self._insert_new(executions, owner=None, epoch=0)

    def _insert_new(
        self, executions: Sequence[Execution], *, owner: str | None, epoch: int
    ) -> set[str]:
        # Encoded before anything is stored, as the driver does: all or nothing.
        documents = [bson_roundtrip(to_document(execution)) for execution in executions]
        new: set[str] = set()
        for document in documents:
            if document["_id"] in self.executions:
                continue
            document["lease"] = self._lease(owner, epoch)
            self.executions[document["_id"]] = document
            self._logs[document["_id"]] = []
            new.add(document["_id"])
        return new

    async def claim(self, execution_id: str, owner: str) -> tuple[Execution, Lease] | None:
        document = self.executions.get(execution_id)
        if document is None or document["status"] not in ("pending", "running"):
            return None
        if not self._expired(document):
            return None
        document["status"] = "running"
        document["started_at"] = document["started_at"] or now()
        document["lease"] = self._lease(owner, document["lease"]["epoch"] + 1)
        return _execution(document), Lease(execution_id, owner, document["lease"]["epoch"])

    async def claim_many(self, owner: str, limit: int) -> Claimed:
        # Like MongoDB's: the lease changes hands, the status stays (the run sets it).
        if limit <= 0:
            return Claimed([], more=False)
        free = [
            d
            for d in self.executions.values()
            if d["status"] in ("pending", "running") and self._expired(d)
        ]
        free.sort(key=lambda d: (-d["priority"], d["created_at"]))
        candidates = free[:limit]
        leased = []
        for document in candidates:
            document["lease"] = self._lease(owner, document["lease"]["epoch"] + 1)
            lease = Lease(document["_id"], owner, document["lease"]["epoch"])
            leased.append((_execution(document), lease))
        return Claimed(leased, more=len(candidates) == limit)

    async def checkpoint(
        self, lease: Lease, execution: Execution, logs: Sequence[LogLine] = ()
    ) -> bool:
        # Encoded before it is sent: an unstorable write fails, whoever holds the lease.
        fields = bson_roundtrip(mutable_fields(execution))
        lines = bson_roundtrip([_log_fields(line) for line in logs])
        document = self._fenced(lease)
        document.update(fields)
        document["lease"]["expires_ms"] = self._now_ms() + self.lease_ms
        kept = self._logs[lease.execution_id]
        kept.extend(LogLine(**line) for line in lines[: max(self.max_logs - len(kept), 0)])
        return bool(document["cancel_requested"])

    async def renew(self, lease: Lease) -> bool:
        document = self._fenced(lease)
        document["lease"]["expires_ms"] = self._now_ms() + self.lease_ms
        return bool(document["cancel_requested"])

    async def release(self, leases: Sequence[Lease]) -> None:
        for lease in leases:
            with contextlib.suppress(LeaseLost):  # fenced: a lost lease matches nothing
                self._fenced(lease)["lease"]["expires_ms"] = _FREE

    async def request_cancel(self, execution_id: str) -> bool:
        document = self.executions.get(execution_id)
        if document is None or document["status"] not in ("pending", "running"):
            return False
        document["cancel_requested"] = True
        return True

    async def get(self, execution_id: str) -> Execution | None:
        document = self.executions.get(execution_id)
        return None if document is None else _execution(document)

    async def get_with_owner(self, execution_id: str) -> tuple[Execution, str | None] | None:
        document = self.executions.get(execution_id)
        if document is None:
            return None
        live = document["lease"]["expires_ms"] > self._now_ms()
        owner: str | None = document["lease"]["owner"]
        return _execution(document), owner if live else None

    async def logs(self, execution_id: str) -> list[LogLine]:
        return list(self._logs.get(execution_id, ()))

    async def store_deltas(
        self, execution: Execution, drafts: Sequence[DeltaDraft]
    ) -> list[Document]:
        documents = [
            bson_roundtrip(delta_document(execution, index, draft))
            for index, draft in enumerate(drafts)
        ]
        # A resumed run finds what an interrupted one stored, and keeps it.
        version = max(
            (d["version"] for d in self.deltas.values() if d["blob_id"] == execution.blob_id),
            default=0,
        )
        for document in documents:
            if document["_id"] not in self.deltas:
                version += 1
                document["version"] = version
                self.deltas[document["_id"]] = document
        return [bson_roundtrip(self.deltas[document["_id"]]) for document in documents]

    async def unpublished(self, limit: int = 100) -> list[Execution]:
        waiting = [
            d
            for d in self.executions.values()
            if d["status"] == "completed" and not d["deltas_published"]
        ]
        waiting.sort(key=lambda d: d["completed_at"])
        return [_execution(d) for d in waiting[:limit]]

    async def deltas_of(self, execution_id: str) -> list[Document]:
        found = [d for d in self.deltas.values() if d["execution_id"] == execution_id]
        return [bson_roundtrip(d) for d in sorted(found, key=lambda d: d["version"])]

    async def mark_published(self, execution_id: str) -> None:
        document = self.executions.get(execution_id)
        if document is not None:
            document["deltas_published"] = True


def _execution(document: Document) -> Execution:
    """A record read back: a copy, sharing nothing with the stored document."""
    copy = bson_roundtrip({k: v for k, v in document.items() if k != "lease"})
    return from_document(copy)


def _log_fields(line: LogLine) -> Document:
    return {
        "timestamp": line.timestamp,
        "level": line.level,
        "step_id": line.step_id,
        "message": line.message,
    }


def bson_roundtrip(value: Any) -> Any:
    """`value` as MongoDB hands it back: copied, tuples as lists, datetimes in UTC to the
    millisecond; `UnstorableError` for what BSON cannot hold, as the real store raises."""
    if value is None or isinstance(value, bool | float | str | bytes):
        return value
    if isinstance(value, int):
        if value not in _INT64:
            raise UnstorableError("MongoDB can only handle up to 8-byte ints")
        return value
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    if isinstance(value, Mapping):
        copy: Document = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnstorableError(f"documents must have only string keys, key was {key!r}")
            if "\0" in key:
                raise UnstorableError(f"key {key!r} must not contain NULL bytes")
            copy[key] = bson_roundtrip(item)
        return copy
    if isinstance(value, list | tuple):
        return [bson_roundtrip(item) for item in value]
    raise UnstorableError(f"cannot encode object: {value!r}, of type: {type(value)}")
