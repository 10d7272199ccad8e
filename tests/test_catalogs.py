"""The catalog a replica runs on: it follows the registry without notices, and a
registered state that does not load never replaces the last good one."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from blobflow.core.catalog import Catalog
from blobflow.core.sources import SourceDocument
from blobflow.errors import DefinitionError, Problem
from blobflow.metrics import Metrics
from blobflow.runtime.catalogs import FOLLOW_INTERVAL_S, Catalogs
from blobflow.runtime.reloads import CoalescingReloader
from blobflow.store.definitions import DefinitionStore
from tests.api_support import Servers
from tests.support import catalog_with, eventually, example_catalog, step


class Registry:
    """A registry whose state and head the test sets."""

    def __init__(self, catalog: Catalog) -> None:
        self.state: Catalog | DefinitionError = catalog
        self.version = 1

    async def catalog(self) -> Catalog:
        if isinstance(self.state, DefinitionError):
            raise self.state
        return self.state

    async def head_version(self) -> int:
        return self.version


def catalogs_of(registry: Registry) -> tuple[Catalogs, list[Catalog], Metrics]:
    used: list[Catalog] = []
    metrics = Metrics()
    return Catalogs(registry, used.append, metrics), used, metrics


def failed(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("blobflow_definitions_load_failed")
    assert value is not None
    return value


@pytest.mark.asyncio
async def test_a_replica_follows_the_registry_without_a_notice() -> None:
    first, second = example_catalog(), catalog_with([step("a")])
    registry = Registry(first)
    catalogs, used, _ = catalogs_of(registry)
    assert await catalogs.load() is first
    async with (
        CoalescingReloader(catalogs.reload, interval_s=0.01) as reloader,
        catalogs.following(reloader, interval_s=0.01),
    ):
        await asyncio.sleep(0.05)
        assert used == []  # the head did not move: nothing reloaded
        registry.state, registry.version = second, 2

        async def followed() -> bool:
            return used == [second]

        await eventually(followed, timeout_s=2)
    assert catalogs.version == 2


@pytest.mark.asyncio
async def test_a_state_that_does_not_load_keeps_the_last_good_and_says_so() -> None:
    good, newer = example_catalog(), catalog_with([step("a")])
    registry = Registry(good)
    catalogs, used, metrics = catalogs_of(registry)
    await catalogs.load()
    registry.state = DefinitionError([Problem("workflows[0]", ("steps",), "broken")])
    registry.version = 2

    await catalogs.reload()

    assert used == []  # the engine keeps running on the last good catalog
    assert catalogs.problem is not None
    assert "broken" in catalogs.problem
    assert failed(metrics) == 1
    registry.state, registry.version = newer, 3
    await catalogs.reload()
    assert used == [newer]
    assert catalogs.problem is None
    assert failed(metrics) == 0


@pytest.mark.asyncio
async def test_a_registration_without_its_notice_reaches_the_service(
    servers: Servers,
) -> None:
    async with servers.serve() as api:
        service = api.service
        store = DefinitionStore(service.mongo[servers.database])
        poet: dict[str, Any] = {
            "provider": {"id": "poet", "name": "Poet"},
            "workflows": [
                {"workflow_id": "blob_processing_workflow", "triggers": [{"event": "onCreate"}]}
            ],
        }
        # Registered behind the service's back: no notice on blobflow.registry.changed.
        await store.register([SourceDocument("provider", "p.yaml", copy.deepcopy(poet))])

        async def followed() -> bool:
            return "poet" in service.engine.catalog.providers

        await eventually(followed, timeout_s=FOLLOW_INTERVAL_S * 2)
