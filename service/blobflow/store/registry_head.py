"""The registry's head: one document that orders registrations and counts them.

Registrations apply one after another. A registrar holds the head's lease while
it reads the registered state, checks its bundle against it and commits, so
two bundles valid alone but not together never both apply: the second is
checked against the first. The lease runs on the database server's clock and
expires, so a registrar that died holding it delays the next one by at most
`LEASE_MS`. Each commit bumps `version`: one read by `_id` tells a replica
whether what it loaded is still the latest (`blobflow.runtime.reloads`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any, Final

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from blobflow.errors import RegistrationConflict
from blobflow.store.fencing import NOW_MS

Document = dict[str, Any]
HEAD_ID: Final = "head"
# Longer than any registration takes (validation and two writes), short enough that a
# registrar's crash holds the others up only briefly.
LEASE_MS: Final = 10_000
WAIT_S: Final = 15.0
_RETRY_DELAYS_S: Final = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


class RegistryHead:
    def __init__(self, collection: AsyncCollection[Document], *, lease_ms: int = LEASE_MS) -> None:
        self.collection = collection
        self.lease_ms = lease_ms

    async def version(self) -> int:
        """How many registrations have changed the registry (0: none yet)."""
        head = await self.collection.find_one({"_id": HEAD_ID}, {"version": True})
        return 0 if head is None else int(head.get("version", 0))

    @contextlib.asynccontextmanager
    async def held(self, wait_s: float = WAIT_S) -> AsyncIterator[str]:
        """Hold the lease while the body registers; RegistrationConflict when other
        registrars keep it past `wait_s`."""
        token = uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        attempt = 0
        while not await self._take(token):
            if loop.time() >= deadline:
                raise RegistrationConflict(
                    f"another registration held the registry for {wait_s:g} s; try again"
                )
            # Another process holds it: there is no event to wait on across processes.
            await asyncio.sleep(_RETRY_DELAYS_S[min(attempt, len(_RETRY_DELAYS_S) - 1)])
            attempt += 1
        try:
            yield token
        finally:
            await self.collection.update_one(
                {"_id": HEAD_ID, "lease.token": token}, {"$set": {"lease.expires_ms": 0}}
            )

    async def bump(self) -> None:
        """Count a registration that changed the registry (its rows are committed)."""
        await self.collection.update_one({"_id": HEAD_ID}, {"$inc": {"version": 1}}, upsert=True)

    async def _take(self, token: str) -> bool:
        free = {"$lt": [{"$ifNull": ["$lease.expires_ms", 0]}, NOW_MS]}
        lease = {"token": token, "expires_ms": {"$add": [NOW_MS, self.lease_ms]}}
        try:
            head = await self.collection.find_one_and_update(
                {"_id": HEAD_ID},
                [{"$set": {"lease": {"$cond": [free, lease, "$lease"]}}}],
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False  # two first registrations creating the head at once: one wins
        return head is not None and head.get("lease", {}).get("token") == token
