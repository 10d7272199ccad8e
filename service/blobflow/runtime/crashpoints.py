"""Named places where the fault suite makes a replica die, to show a crash there
loses nothing and does nothing twice.

Off unless `BLOBFLOW_CRASH_AT` names points (comma separated); then the process
kills itself with SIGKILL (no cleanup, like a power cut) the first time it reaches
one. The points sit between the writes that matter, where a timed kill from
outside could never land reliably:

| point                 | between                                          |
|-----------------------|--------------------------------------------------|
| `step_called:<step>`  | the step's HTTP answer and its checkpoint        |
| `deltas_stored`       | the deltas' insert and their delta events        |
| `deltas_published`    | the delta events and the final write             |

The wrappers keep the executor free of it: the engine wraps the persistence and
the sink of a run only when a point is armed.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from blobflow.core.deltas import DeltaDraft
from blobflow.core.records import Execution, LogLine
from blobflow.runtime.executor import Persistence
from blobflow.runtime.ports import DeltaPublisher

VARIABLE = "BLOBFLOW_CRASH_AT"
logger = logging.getLogger(__name__)


@cache
def armed() -> frozenset[str]:
    """The points named in the environment, read once."""
    raw = os.environ.get(VARIABLE, "")
    return frozenset(point.strip() for point in raw.split(",") if point.strip())


def crash_at(point: str, points: frozenset[str]) -> None:
    if point in points:
        logger.critical("crash point %s reached: killing the process", point)
        os.kill(os.getpid(), signal.SIGKILL)


class CrashingPersistence:
    def __init__(self, inner: Persistence, points: frozenset[str]) -> None:
        self.inner = inner
        self.points = points

    async def checkpoint(self, execution: Execution, logs: Sequence[LogLine]) -> None:
        # The first checkpoint that carries a completed step is the one after its call.
        for step in execution.steps:
            if step.status == "completed":
                crash_at(f"step_called:{step.id}", self.points)
        await self.inner.checkpoint(execution, logs)

    async def store_deltas(
        self, execution: Execution, drafts: Sequence[DeltaDraft]
    ) -> Sequence[dict[str, Any]]:
        stored = await self.inner.store_deltas(execution, drafts)
        crash_at("deltas_stored", self.points)
        return stored


class CrashingSink:
    def __init__(self, inner: DeltaPublisher, points: frozenset[str]) -> None:
        self.inner = inner
        self.points = points

    async def publish(self, deltas: Sequence[Mapping[str, Any]]) -> bool:
        published = await self.inner.publish(deltas)
        crash_at("deltas_published", self.points)
        return published
