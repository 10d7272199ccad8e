"""Registered definitions in MongoDB: every version of every item, applied all or nothing.

A bundle is checked as a whole against itself plus the latest registered
versions; each new or changed item then gets its next version. Without
multi-document transactions, new versions are inserted with `committed: False`
and committed by one `update_many`; readers see only committed versions. A
registrar that crashes in between leaves rows nobody reads whose version
numbers stay taken, so versions may skip. (`update_many` is not atomic either,
but a crash inside it is a far narrower window.)

Registrars take turns (`RegistryHead`): each checks its bundle against the
state it is applied to, so two bundles valid alone but not together (one
changes a schema the other uses) never both apply; the second is refused with
the conflict named. Should a registrar outlive its turn (paused past the
lease), the unique (kind, id, version) index still stops two rows of one
version: the loser waits for the winner to commit, then re-reads and starts over.

What is registered was valid when it was registered, perhaps by an older version
with looser rules: it is loaded leniently (`build_catalog(registered=...)`), so
the registered state always loads; what this version refuses to run is disabled
and logged. What a bundle brings is held to today's rules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import bson
from bson.errors import InvalidDocument
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from blobflow.core.bundles import ItemResult
from blobflow.core.catalog import Catalog, DisabledBinding, DisabledSchema, build_catalog
from blobflow.core.compiler import CompiledWorkflow, compile_workflow
from blobflow.core.definitions import Kind, Workflow
from blobflow.core.records import now
from blobflow.core.sources import SourceDocument
from blobflow.core.validation import source_problem, validate_document
from blobflow.errors import DefinitionError, Problem, RegistrationConflict
from blobflow.store.registry_head import RegistryHead
from blobflow.store.translation import translate_errors

logger = logging.getLogger(__name__)
Document = dict[str, Any]
Key = tuple[Kind, str]
MAX_ATTEMPTS = 5
_DUPLICATE_KEY = 11000
# Enough for every item in one reply, so a catalog load stays one round trip.
_BATCH_SIZE = 100_000
# How long a registrar waits for another one to commit (~0.8 s in all).
_SETTLE_DELAYS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)


@dataclass(frozen=True, slots=True)
class _Latest:
    """The latest committed version of one registered item."""

    version: int
    hash: str
    source: SourceDocument


@translate_errors
class DefinitionStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.definitions = db["definitions"]
        self.head = RegistryHead(db["registry"])
        # Disabled items already logged: a reload logs only what is newly disabled.
        self._logged: set[DisabledBinding | DisabledSchema] = set()

    async def ensure_indexes(self) -> None:
        await self.definitions.create_indexes(
            [
                IndexModel(
                    [("kind", ASCENDING), ("id", ASCENDING), ("version", ASCENDING)],
                    unique=True,
                    name="item_version",
                ),
                IndexModel(
                    [
                        ("committed", ASCENDING),
                        ("kind", ASCENDING),
                        ("id", ASCENDING),
                        ("version", DESCENDING),
                    ],
                    name="latest",
                ),
            ]
        )

    async def register(self, documents: Sequence[SourceDocument]) -> list[ItemResult]:
        """Store the new and changed items of a bundle; DefinitionError writes nothing.

        One registration at a time (`RegistryHead`): the bundle is checked against
        the state it is applied to, never against one another registrar is changing.
        """
        async with self.head.held():
            results = await self._register(list(documents))
        return results

    async def head_version(self) -> int:
        """Counts the registrations that changed something: one read, to poll."""
        return await self.head.version()

    async def _register(self, incoming: list[SourceDocument]) -> list[ItemResult]:
        waited: set[str] = set()
        for _ in range(MAX_ATTEMPTS):
            latest = await self._latest()
            hashes = _check(incoming, latest).hashes
            keys = [_key(document) for document in incoming]
            changed = {key for key in keys if key not in latest or latest[key].hash != hashes[key]}
            tops = await self._tops(sorted(changed))
            # Another registrar's rows, not committed yet: once they are, our content may
            # be registered already (replicas of one service registering the same bundle
            # at once). Waited for once: what stays uncommitted is a crash's leftover.
            in_flight = [_row_id(*key, top) for key, (top, done) in tops.items() if not done]
            if unseen := [row_id for row_id in in_flight if row_id not in waited]:
                await self._settle(unseen, waited)
                continue
            results: list[ItemResult] = []
            rows: list[Document] = []
            for document, key in zip(incoming, keys, strict=True):
                if key not in changed:
                    results.append(ItemResult(*key, latest[key].version, changed=False))
                    continue
                # Above the top, leftovers included: their numbers stay taken.
                version = tops[key][0] + 1 if key in tops else 1
                rows.append(_row(document, key, version, hashes[key]))
                results.append(ItemResult(*key, version, changed=True))
            conflict = await self._write(rows) if rows else None
            if conflict is None:
                if rows:
                    await self.head.bump()
                return results
            await self._settle([conflict], waited)
        raise RegistrationConflict(f"registration conflicted {MAX_ATTEMPTS} times; try again")

    async def catalog(self) -> Catalog:
        """The latest committed version of every item, with its version number."""
        latest = await self._latest()
        versions = {key: item.version for key, item in latest.items()}
        catalog = build_catalog((), versions, registered=[item.source for item in latest.values()])
        self._log_disabled(catalog)
        return catalog

    def _log_disabled(self, catalog: Catalog) -> None:
        disabled: list[DisabledBinding | DisabledSchema] = [
            *catalog.disabled_schemas,
            *catalog.disabled_bindings,
        ]
        for item in (item for item in disabled if item not in self._logged):
            if isinstance(item, DisabledSchema):
                logger.warning("schema %s is disabled: %s", item.schema_id, item.reason)
            else:
                logger.warning(
                    "binding of provider %s to workflow %s is disabled, no event starts it: %s",
                    item.provider_id,
                    item.workflow_id,
                    item.reason,
                )
        self._logged = set(disabled)

    async def document(self, kind: Kind, item_id: str, version: int) -> Document | None:
        """The definition exactly as registered, if that version is committed."""
        row = await self.definitions.find_one(
            {"_id": _row_id(kind, item_id, version), "committed": True}, {"document": True}
        )
        return None if row is None else row["document"]

    async def versions(self, kind: Kind, item_id: str) -> list[Document]:
        """Every committed version of one item, newest first: number, hash and time only
        (`document` reads the definition of one; each may be up to a MiB)."""
        cursor = self.definitions.find(
            {"kind": kind, "id": item_id, "committed": True},
            {"version": True, "hash": True, "registered_at": True},
            sort=[("version", DESCENDING)],
        )
        return [row async for row in cursor]

    async def compiled_workflow(self, workflow_id: str, version: int) -> CompiledWorkflow | None:
        """One version of a workflow, so an execution can finish on the one it started on."""
        data = await self.document("workflow", workflow_id, version)
        if data is None:
            return None
        source = SourceDocument("workflow", _label(("workflow", workflow_id), version), data)
        model, problems = validate_document(source)
        if not isinstance(model, Workflow):
            raise DefinitionError(problems)
        compiled = compile_workflow(
            model, lambda path, message: problems.append(source_problem(source, path, message))
        )
        if problems:
            raise DefinitionError(problems)
        return compiled

    async def _latest(self) -> dict[Key, _Latest]:
        pipeline: list[Document] = [
            {"$match": {"committed": True}},
            {"$sort": {"committed": 1, "kind": 1, "id": 1, "version": -1}},
            {"$group": {"_id": {"kind": "$kind", "id": "$id"}, "row": {"$first": "$$ROOT"}}},
        ]
        latest: dict[Key, _Latest] = {}
        async for group in await self.definitions.aggregate(pipeline, batchSize=_BATCH_SIZE):
            row = group["row"]
            key: Key = (row["kind"], row["id"])
            source = SourceDocument(row["kind"], _label(key, row["version"]), row["document"])
            latest[key] = _Latest(row["version"], row["hash"], source)
        return latest

    async def _tops(self, keys: Sequence[Key]) -> dict[Key, tuple[int, bool]]:
        """The highest stored version of each item, and whether it is committed."""
        if not keys:
            return {}
        pipeline: list[Document] = [
            {"$match": {"$or": [{"kind": kind, "id": item_id} for kind, item_id in keys]}},
            {"$sort": {"kind": 1, "id": 1, "version": -1}},
            {
                "$group": {
                    "_id": {"kind": "$kind", "id": "$id"},
                    "top": {"$first": "$version"},
                    "committed": {"$first": "$committed"},
                }
            },
        ]
        cursor = await self.definitions.aggregate(pipeline, batchSize=_BATCH_SIZE)
        return {
            (group["_id"]["kind"], group["_id"]["id"]): (group["top"], group["committed"])
            async for group in cursor
        }

    async def _write(self, rows: list[Document]) -> str | None:
        """Insert and commit `rows`; else the id of the row another registrar took first."""
        try:
            await self.definitions.insert_many(rows, ordered=True)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors") or []
            if not errors or errors[0].get("code") != _DUPLICATE_KEY:
                raise
            # Ordered: the rows before the conflicting one are this attempt's own.
            failed = errors[0]["index"]
            mine = [row["_id"] for row in rows[:failed]]
            if mine:
                await self.definitions.delete_many({"_id": {"$in": mine}, "committed": False})
            # Both unique indexes encode (kind, id, version): the other row has this _id.
            taken: str = rows[failed]["_id"]
            return taken
        ids = [row["_id"] for row in rows]
        await self.definitions.update_many({"_id": {"$in": ids}}, {"$set": {"committed": True}})
        return None

    async def _settle(self, row_ids: list[str], waited: set[str]) -> None:
        """Wait, boundedly, until other registrars' rows are committed or removed."""
        waited.update(row_ids)
        pending = {"_id": {"$in": row_ids}, "committed": False}
        for delay in _SETTLE_DELAYS:
            if await self.definitions.find_one(pending, {"_id": True}) is None:
                return
            await asyncio.sleep(delay)


def _check(incoming: list[SourceDocument], latest: dict[Key, _Latest]) -> Catalog:
    """The catalog the registry would hold; DefinitionError names the offending items."""
    replaced = {(document.kind, document.item_id) for document in incoming}
    kept = [item.source for key, item in latest.items() if key not in replaced]
    # A value BSON cannot hold would fail the insert halfway through the bundle;
    # checked first, as hashing an integer beyond 64 bits raises TypeError.
    problems = [p for document in incoming if (p := _unstorable(document)) is not None]
    if problems:
        raise DefinitionError(problems)
    return build_catalog(incoming, registered=kept)


def _key(document: SourceDocument) -> Key:
    item_id = document.item_id
    assert item_id is not None, "only called once the bundle has been validated"
    return document.kind, item_id


def _unstorable(document: SourceDocument) -> Problem | None:
    try:
        bson.encode({"document": document.data})
    except (InvalidDocument, OverflowError) as exc:
        return Problem(document.source, (), f"cannot be stored: {exc}")
    return None


def _row_id(kind: Kind, item_id: str, version: int) -> str:
    return f"{kind}:{item_id}:{version}"


def _label(key: Key, version: int) -> str:
    return f"registered:{key[0]}:{key[1]}:v{version}"


def _row(document: SourceDocument, key: Key, version: int, content_hash: str) -> Document:
    return {
        "_id": _row_id(*key, version),
        "kind": key[0],
        "id": key[1],
        "version": version,
        "hash": content_hash,
        "document": document.data,
        "committed": False,
        "registered_at": now(),
    }
