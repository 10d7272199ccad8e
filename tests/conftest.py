"""Fixtures for integration tests: real servers on 127.0.0.1, started on first use.

Servers start lazily, once per session, only when a test asks for them, so unit tests
pay nothing. Session-scoped server fixtures are synchronous on purpose: they do not
depend on pytest-asyncio's loop scopes. Per-test isolation comes from unique names
(`mongo_db_name`, `stream_prefix`), cleaned up after each test.

| fixture          | scope    | gives                                                   |
|------------------|----------|---------------------------------------------------------|
| `nats_server`    | session  | `NatsServer`: `.url`, `.port`, `.store_dir`, lifecycle  |
| `mongodb`        | session  | `MongoDeployment`: `.url`, lifecycle, `.sync_client()`  |
| `mongo_db_name`  | function | a fresh database name, dropped afterwards               |
| `stream_prefix`  | function | `t_<hex>` for stream names and subjects; streams with   |
|                  |          | that prefix are deleted afterwards                      |
| `nats_client`    | function | connected nats-py client (async)                        |
| `mongo_client`   | function | `AsyncMongoClient` (async)                              |
| `mongo_db`       | function | `AsyncDatabase` named `mongo_db_name` (async)           |
| `downstream`     | function | scripted HTTP server `Downstream` on the test's loop    |
| `api`            | function | the whole service and a client for its HTTP API         |
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

# The servers' modules (aiohttp, pymongo, nats-py) are imported inside the fixtures, so
# a run of unit tests does not pay ~0.25 s importing them.
if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from pymongo import AsyncMongoClient
    from pymongo.asynchronous.database import AsyncDatabase

    from tests.api_support import Api, Servers
    from tests.servers import Downstream, MongoDeployment, NatsServer


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """nats-server with JetStream; `stop()`, `start()`, `kill()`, `pause()`, `resume()`."""
    from tests.servers import NatsServer

    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        server.start()
        yield server


@pytest.fixture(scope="session")
def mongodb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoDeployment]:
    """SecantusDB from the venv, or the server named by BLOBFLOW_TEST_MONGODB_URL.

    With the external URL, lifecycle methods raise `UnsupportedOperation`.
    """
    from tests.servers import EXTERNAL_MONGODB_ENV, ExternalMongo, MongoServer

    external_url = os.environ.get(EXTERNAL_MONGODB_ENV)
    if external_url:
        with ExternalMongo(external_url) as external:
            yield external
        return
    with MongoServer(tmp_path_factory.mktemp("mongodb")) as server:
        server.start()
        yield server


@pytest.fixture
def mongo_db_name(mongodb: MongoDeployment) -> Iterator[str]:
    """A database name no other test uses; the database is dropped afterwards."""
    from tests.servers import unique_name

    name = unique_name("t")
    yield name
    # A crash test may have left the server down; the next test needs it anyway.
    mongodb.ensure_running()
    mongodb.sync_client().drop_database(name)


@pytest.fixture
def stream_prefix(nats_server: NatsServer) -> Iterator[str]:
    """`t_<hex>`: prefix stream names (`f"{p}_BLOBS"`) and subjects (`f"{p}.blobs.>"`)
    with it, so tests never collide on names or overlapping subjects."""
    from tests.servers import unique_name

    prefix = unique_name("t")
    yield prefix
    nats_server.ensure_running()
    nats_server.delete_streams(prefix)


@pytest_asyncio.fixture
async def nats_client(nats_server: NatsServer) -> AsyncIterator[NatsClient]:
    """A nats-py client that reconnects quickly when a test restarts the server."""
    import nats

    client = await nats.connect(
        nats_server.url, connect_timeout=2, reconnect_time_wait=1, max_reconnect_attempts=-1
    )
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture
async def mongo_client(mongodb: MongoDeployment) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    """An `AsyncMongoClient` with a bounded operation timeout (a hung server fails fast)."""
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb.url, timeoutMS=10000)
    try:
        yield client
    finally:
        # close() ends sessions on the server: with the server left down by the test it
        # would wait out the whole timeout, so bring the server back first.
        mongodb.ensure_running()
        await client.close()


@pytest_asyncio.fixture
async def mongo_db(
    mongo_client: AsyncMongoClient[dict[str, Any]], mongo_db_name: str
) -> AsyncDatabase[dict[str, Any]]:
    """The test's own database on the shared server."""
    return mongo_client[mongo_db_name]


@pytest_asyncio.fixture
async def downstream() -> AsyncIterator[Downstream]:
    """A scripted HTTP server on the test's event loop; see tests/servers/downstream.py."""
    from tests.servers import Downstream

    async with Downstream() as server:
        yield server


@pytest.fixture
def servers(
    nats_server: NatsServer,
    mongodb: MongoDeployment,
    mongo_db_name: str,
    stream_prefix: str,
    downstream: Downstream,
) -> Servers:
    """This test's servers, database and stream names: `servers.serve()` starts the service."""
    from tests.api_support import Servers

    return Servers(nats_server, mongodb, mongo_db_name, stream_prefix, downstream)


@pytest_asyncio.fixture
async def api(servers: Servers) -> AsyncIterator[Api]:
    """The whole service with tokens for root (admin), alice and bob; see tests/api_support.py."""
    async with servers.serve() as api:
        yield api


@pytest.fixture(autouse=True)
def _restore_shared_servers() -> Iterator[None]:
    """After each test, bring back a shared server a test left killed or paused.

    Costs nothing when no server was started (the unit-test case).
    """
    yield
    # Not imported means no server was ever created: nothing to restore, nothing to load.
    processes = sys.modules.get("tests.servers.processes")
    if processes is not None:
        for server in processes.open_servers():
            server.ensure_running()
