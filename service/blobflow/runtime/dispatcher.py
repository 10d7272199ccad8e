"""Running executions with bounded concurrency, highest priority first.

Admission hands over executions leased to this worker: new ones, and ones
it claimed because nobody held them. A fixed number of
workers take the highest priority item next; one execution failing never
affects another. An item whose lease is a third gone has it renewed before
it starts, so work another replica took over is not run twice, and the run's
heartbeat goes on from that renewal.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from blobflow.core.leases import Lease
from blobflow.core.records import Execution
from blobflow.errors import LeaseLost
from blobflow.runtime.cancellation import raise_if_cancelling
from blobflow.runtime.engine import Engine

logger = logging.getLogger(__name__)


@dataclass(order=True, slots=True)
class _Item:
    rank: tuple[int, int]  # (-priority, arrival): the heap's order
    execution: Execution = field(compare=False)
    lease: Lease = field(compare=False)
    # When the lease was last renewed (taken before the write, on this clock).
    leased_at: float = field(compare=False, default_factory=time.monotonic)
    withdrawn: bool = field(compare=False, default=False)


class Dispatcher:
    def __init__(self, engine: Engine, *, concurrency: int, lease_ms: int) -> None:
        self.engine = engine
        self.concurrency = concurrency
        self.lease_s = lease_ms / 1000
        self._queue: asyncio.PriorityQueue[_Item] = asyncio.PriorityQueue()
        self._arrivals = itertools.count()
        self._known: set[str] = set()
        self._waiting: dict[str, _Item] = {}
        # Claimed again while running here (its lease had lapsed): runs after.
        self._reclaimed: dict[str, _Item] = {}
        self._busy = 0
        self._room = asyncio.Event()
        self._room.set()
        self.accepting = True

    @property
    def backlog(self) -> int:
        """Executions queued or running here."""
        return len(self._known)

    def submit(
        self, leased: Sequence[tuple[Execution, Lease]], *, leased_at: float | None = None
    ) -> None:
        """Queue leased executions; `leased_at`: when their leases began (default now)."""
        at = time.monotonic() if leased_at is None else leased_at
        for execution, lease in leased:
            self._put(_Item(self._rank(execution.priority), execution, lease, at))
        self.engine.runs.notify()  # a cancel may be waiting for one of them

    async def wait_for_room(self, limit: int) -> None:
        """Return once the backlog is under `limit`: backpressure for intake."""
        while self.backlog >= limit:
            self._room.clear()
            await self._room.wait()

    async def run(self) -> None:
        """Work until cancelled; a cancelled worker leaves its execution to its lease."""
        async with asyncio.TaskGroup() as group:
            for _ in range(self.concurrency):
                group.create_task(self._work())

    async def drain(self, timeout_s: float) -> bool:
        """Wait until nothing runs or the timeout passes; True when idle."""
        deadline = time.monotonic() + timeout_s
        while self._busy and time.monotonic() < deadline:
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        return self._busy == 0

    def withdraw(self, execution_id: str) -> tuple[Execution, Lease] | None:
        """Take a leased execution out of the queue before it starts (to cancel it)."""
        item = self._waiting.get(execution_id)
        if item is None:
            return None
        del self._waiting[execution_id]
        item.withdrawn = True  # the heap keeps it; the worker that pops it skips it
        self._known.discard(execution_id)
        self._room.set()
        return item.execution, item.lease

    def close(self) -> None:
        """Take no new work from now on (shutdown); what is queued is handed back."""
        self.accepting = False

    def take_queued(self) -> list[Lease]:
        """Empty the queue, returning the leases of what had not started (to hand back)."""
        leases = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item.withdrawn:
                continue
            self._waiting.pop(item.execution.id, None)
            self._known.discard(item.execution.id)
            leases.append(item.lease)
        leases += [item.lease for item in self._reclaimed.values()]
        self._reclaimed.clear()
        return leases

    def _rank(self, priority: int) -> tuple[int, int]:
        return (-priority, next(self._arrivals))

    def _put(self, item: _Item) -> None:
        if item.execution.id in self._known:
            # Already queued or running here. Queued past its lease, it may have been
            # claimed again by this very worker: the queued item takes the new lease,
            # or its renewal would fail and nobody would run it.
            waiting = self._waiting.get(item.execution.id)
            if waiting is not None:
                if item.lease.epoch > waiting.lease.epoch:
                    waiting.execution, waiting.lease = item.execution, item.lease
                    waiting.leased_at = item.leased_at
            elif item.lease.epoch > self._latest_epoch(item.execution.id):
                self._reclaimed[item.execution.id] = item
            return
        self._known.add(item.execution.id)
        self._waiting[item.execution.id] = item
        self._queue.put_nowait(item)

    async def _work(self) -> None:
        while True:
            raise_if_cancelling()
            item = await self._queue.get()
            if item.withdrawn:
                continue
            self._waiting.pop(item.execution.id, None)
            self._busy += 1
            try:
                await self._execute(item)
            except Exception:
                logger.exception("execution %s failed unexpectedly", item.execution.id)
            finally:
                self._busy -= 1
                self._known.discard(item.execution.id)
                self._room.set()
                again = self._reclaimed.pop(item.execution.id, None)
                if again is not None and again.lease.epoch > item.lease.epoch:
                    self._put(again)

    async def _execute(self, item: _Item) -> None:
        cancelled = False
        if time.monotonic() - item.leased_at >= self.lease_s / 3:
            renewing_at = time.monotonic()
            try:
                # Fenced by owner and epoch: succeeds only if nobody claimed it.
                cancelled = await self.engine.store.renew(item.lease)
            except LeaseLost:
                logger.info("execution %s was taken over while queued", item.execution.id)
                return
            item.leased_at = renewing_at
        await self.engine.run_leased(
            item.execution, item.lease, cancelled=cancelled, renewed_at=item.leased_at
        )

    def _latest_epoch(self, execution_id: str) -> int:
        """The epoch of the lease this worker last queued for the execution (0: none)."""
        again = self._reclaimed.get(execution_id)
        return again.lease.epoch if again is not None else 0
