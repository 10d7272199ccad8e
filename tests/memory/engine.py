"""`memory_engine`: an engine wired to the in-memory ports, and the ways back to them."""

from __future__ import annotations

import time
from collections.abc import Callable

from blobflow.core.catalog import Catalog
from blobflow.runtime.engine import Engine
from tests.memory.caller import ScriptedCaller
from tests.memory.publisher import MemoryPublisher
from tests.memory.store import MemoryExecutionStore


def memory_engine(
    catalog: Catalog,
    *,
    lease_ms: int = 15_000,
    caller: ScriptedCaller | None = None,
    store: MemoryExecutionStore | None = None,
    sink: MemoryPublisher | None = None,
    worker_id: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Engine:
    """An engine on in-memory ports; new ones for those not given.

    `lease_ms` and `clock` configure a new store. Reach the parts again with
    `memory_store`, `scripted_caller` and `memory_publisher`.
    """
    return Engine(
        catalog,
        store or MemoryExecutionStore(lease_ms=lease_ms, clock=clock),
        caller or ScriptedCaller(),
        worker_id=worker_id,
        sink=sink or MemoryPublisher(),
    )


def memory_store(engine: Engine) -> MemoryExecutionStore:
    assert isinstance(engine.store, MemoryExecutionStore)
    return engine.store


def scripted_caller(engine: Engine) -> ScriptedCaller:
    assert isinstance(engine.caller, ScriptedCaller)
    return engine.caller


def memory_publisher(engine: Engine) -> MemoryPublisher:
    assert isinstance(engine.sink, MemoryPublisher)
    return engine.sink
