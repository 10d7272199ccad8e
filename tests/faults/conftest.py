"""Fixtures of the fault suite; the servers come from tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.faults.stack import Stack
from tests.servers import Downstream, MongoDeployment, NatsServer

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this folder is the fault suite: `make test-faults`, not `make test`."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.faults)


@pytest_asyncio.fixture
async def stack(
    nats_server: NatsServer,
    mongodb: MongoDeployment,
    mongo_db_name: str,
    downstream: Downstream,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    """No replica yet: `await stack.start()` adds one; all are killed at the end."""
    async with Stack(nats_server, mongodb, mongo_db_name, downstream.url, tmp_path) as stack:
        yield stack
