"""The catalog this replica runs on: loaded from the registry, kept fresh, never lost.

A registration tells every replica to reload (`blobflow.registry.changed`), but
that notice is at most once: a replica that missed it would run old
definitions indefinitely. So each replica also reads the registry's head on a
timer (one read by `_id`) and reloads when it moved past what it loaded: every
replica is on the latest definitions within `FOLLOW_INTERVAL_S` of a change,
notice or not. A reload that fails keeps the last good catalog, and says so
(a log line, `blobflow_definitions_load_failed`, `problem` for `/readyz`),
until one succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Final, Protocol

from blobflow.core.catalog import Catalog
from blobflow.errors import DefinitionError, StoreUnavailable
from blobflow.metrics import Metrics
from blobflow.runtime.cancellation import raise_if_cancelling
from blobflow.runtime.reloads import CoalescingReloader

logger = logging.getLogger(__name__)
FOLLOW_INTERVAL_S: Final = 5.0


class Registry(Protocol):
    async def catalog(self) -> Catalog: ...

    async def head_version(self) -> int: ...


class Catalogs:
    """Loads the registered definitions into the engine (`use`), keeping the last good."""

    def __init__(
        self, registry: Registry, use: Callable[[Catalog], None], metrics: Metrics
    ) -> None:
        self.registry = registry
        self.use = use
        self.metrics = metrics
        self.version: int | None = None  # the registry's head when the catalog in use was read
        self.problem: str | None = None  # why the latest registered state did not load

    async def load(self) -> Catalog:
        """The first catalog, for the engine to start with: nothing to keep yet, so a
        failure propagates. `use` is for the reloads after it."""
        version = await self.registry.head_version()
        catalog = await self.registry.catalog()
        self.version = version
        return catalog

    async def reload(self) -> None:
        """Use the latest registered definitions; on failure keep the ones in use."""
        # Read first: a registration landing meanwhile is seen at the next round.
        version = await self.registry.head_version()
        try:
            catalog = await self.registry.catalog()
        except DefinitionError as exc:
            if self.problem is None:
                logger.error(
                    "the registered definitions do not load; keeping the last good: %s", exc
                )
            self.problem = str(exc)
            self.metrics.definitions_load_failed.set(1)
            return
        self.use(catalog)
        self.version = version
        self.problem = None
        self.metrics.definitions_load_failed.set(0)

    @contextlib.asynccontextmanager
    async def following(
        self, reloader: CoalescingReloader, interval_s: float = FOLLOW_INTERVAL_S
    ) -> AsyncIterator[None]:
        """`follow` in a task of its own while the body runs."""
        task = asyncio.ensure_future(self.follow(reloader, interval_s))
        try:
            yield
        finally:
            task.cancel()
            await asyncio.wait({task})

    async def follow(
        self, reloader: CoalescingReloader, interval_s: float = FOLLOW_INTERVAL_S
    ) -> None:
        """Ask for a reload whenever the registry's head moved past what is in use, or
        the last reload failed; never fails."""
        while True:
            raise_if_cancelling()
            await asyncio.sleep(interval_s)  # a timer: another process's change has no event here
            try:
                version = await self.registry.head_version()
            except (StoreUnavailable, TimeoutError) as exc:
                logger.warning("cannot read the registry's version, trying again: %s", exc)
                continue
            if version != self.version or self.problem is not None:
                reloader.request()
