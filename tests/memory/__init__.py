"""In-memory stand-ins for the runtime's ports, for engine tests that need no server.

- `store`: `MemoryExecutionStore`, executions and deltas with MongoDB's semantics,
  `ManualClock` for its leases, `bson_roundtrip`.
- `caller`: `ScriptedCaller`, step requests answered from scripts and recorded, as
  `tests.servers.Downstream` answers them over HTTP; its `Reply` and `Call`.
- `publisher`: `MemoryPublisher`, the delta events published.
- `engine`: `memory_engine`, an engine on these, and `memory_store`, `scripted_caller`
  and `memory_publisher` to reach them again.
"""

from tests.memory.caller import Call, Headers, Reply, ScriptedCaller, service_variable
from tests.memory.engine import memory_engine, memory_publisher, memory_store, scripted_caller
from tests.memory.publisher import MemoryPublisher
from tests.memory.store import Document, ManualClock, MemoryExecutionStore, bson_roundtrip

__all__ = [
    "Call",
    "Document",
    "Headers",
    "ManualClock",
    "MemoryExecutionStore",
    "MemoryPublisher",
    "Reply",
    "ScriptedCaller",
    "bson_roundtrip",
    "memory_engine",
    "memory_publisher",
    "memory_store",
    "scripted_caller",
    "service_variable",
]
