"""Real servers for integration tests: NATS JetStream, a MongoDB-wire server and a
scripted downstream HTTP service, all on 127.0.0.1 and free ports.

The fixtures in tests/conftest.py wrap these; import from here when a test needs a
server of its own (e.g. a second downstream service, or a MongoDB it may crash).
"""

from __future__ import annotations

from tests.servers.downstream import NO_JSON, Downstream, RecordedRequest, Reply, redirect_to
from tests.servers.mongo_server import (
    EXTERNAL_MONGODB_ENV,
    ExternalMongo,
    MongoDeployment,
    MongoServer,
)
from tests.servers.nats_server import NatsServer, run_in_own_loop
from tests.servers.ports import free_port, unique_name
from tests.servers.processes import (
    ManagedProcess,
    ServerStartError,
    UnsupportedOperation,
    open_servers,
)

__all__ = [
    "EXTERNAL_MONGODB_ENV",
    "NO_JSON",
    "Downstream",
    "ExternalMongo",
    "ManagedProcess",
    "MongoDeployment",
    "MongoServer",
    "NatsServer",
    "RecordedRequest",
    "Reply",
    "ServerStartError",
    "UnsupportedOperation",
    "free_port",
    "open_servers",
    "redirect_to",
    "run_in_own_loop",
    "unique_name",
]
