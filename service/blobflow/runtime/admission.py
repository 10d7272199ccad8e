"""Admission: where new executions go, and how a replica takes work nobody holds.

New executions are stored leased to this replica and queued here while its
queue has room. Once the queue is full they are parked instead: stored with no
owner, for whichever replica has room first to claim, highest priority first.
So priority holds across the backlog, not just the part one replica has taken
in, and memory stays bounded: the backlog waits in MongoDB, not here. Up to a
point: a replica parks at most `PARKED_PER_SLOT` times its capacity that it has
not seen claimed; beyond that intake waits and the rest stays in NATS, so a
huge backlog does not flood MongoDB (and claims stay cheap on servers that
sort candidates in memory).

The same claims take over executions whose owner died (their lease ran out);
and on a timer of half a lease, delta events never confirmed are sent again
(`blobflow.runtime.republishing`). Claiming is atomic, so every replica doing
this at once is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Final

from blobflow.core.records import Execution
from blobflow.errors import BusUnavailable, StoreUnavailable, UnstorableError, WriteRejected
from blobflow.group_commit import GroupCommit
from blobflow.metrics import Metrics
from blobflow.runtime.cancellation import raise_if_cancelling
from blobflow.runtime.dispatcher import Dispatcher
from blobflow.runtime.ports import DeltaPublisher, ExecutionStore
from blobflow.runtime.republishing import Republisher

logger = logging.getLogger(__name__)
PARKED_PER_SLOT = 16
# An execution whose delta events keep failing is tried again at least this often,
# in rounds: at half a lease, every minute by default.
REPUBLISH_BACKOFF_ROUNDS: Final = 8


class Admission:
    """`capacity`: executions queued or running here before new ones are parked; the
    queue is topped up from what is parked once it is down to half."""

    def __init__(
        self,
        store: ExecutionStore,
        dispatcher: Dispatcher,
        publisher: DeltaPublisher | None,
        *,
        worker_id: str,
        capacity: int,
        interval_s: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.publisher = publisher
        self.worker_id = worker_id
        self.capacity = capacity
        self.interval_s = interval_s
        self.metrics = metrics or Metrics()
        # Parked work may be waiting: new executions queue behind it, not ahead.
        self._parked = False
        self._wake = asyncio.Event()
        # Parked here and not yet claimed here: an estimate (others claim too).
        self._parked_here = 0
        self.max_parked = PARKED_PER_SLOT * capacity
        self._claimed = asyncio.Event()
        self._admits = GroupCommit(self._admit_together)
        self.republisher = (
            None
            if publisher is None
            else Republisher(
                store,
                publisher,
                base_s=interval_s,
                cap_s=interval_s * REPUBLISH_BACKOFF_ROUNDS,
                metrics=self.metrics,
            )
        )

    def overflowing(self) -> bool:
        # Stopping: what is leased here now would wait out a lease nobody renews.
        return (
            self._parked
            or self.dispatcher.backlog >= self.capacity
            or not self.dispatcher.accepting
        )

    async def admit(self, executions: Sequence[Execution]) -> int:
        """Store new executions, to run here or parked; how many were new (the rest existed).

        The executions of messages handled at once are inserted together (group
        commit): one round trip for a batch of events rather than one each.
        """
        if not executions:
            return 0
        return await self._admits.submit(tuple(executions))

    async def _admit_together(
        self, groups: Sequence[tuple[Execution, ...]]
    ) -> list[int | Exception]:
        """Each group's count of new executions; an unstorable one fails its group alone."""
        try:
            new = await self._store({e.id: e for group in groups for e in group})
        except (UnstorableError, WriteRejected) as exc:
            if len(groups) == 1:
                return [exc]
            # Group by group, so only the message with the bad document fails. Its
            # neighbours' executions inserted already count as existing: their
            # messages are acked, and the executions run once their lease runs out.
            return [await self._alone(group) for group in groups]
        return [sum(e.id in new for e in group) for group in groups]

    async def _alone(self, group: tuple[Execution, ...]) -> int | Exception:
        try:
            return len(await self._store({e.id: e for e in group}))
        except (UnstorableError, WriteRejected) as exc:
            return exc

    async def _store(self, executions: dict[str, Execution]) -> set[str]:
        """Insert, leased here or parked; the ids that were new. Ids are unique here,
        so one event handled twice at once cannot hide its execution from both."""
        if self.overflowing():
            parked = await self.store.park_many(list(executions.values()))
            self.metrics.parked(len(parked))
            self._parked_here += len(parked)
            if parked:
                self._parked = True
                self._wake.set()
            return parked
        leased_at = time.monotonic()  # the lease runs from before the write
        leases = await self.store.create_many(list(executions.values()), self.worker_id)
        leased = [(executions[lease.execution_id], lease) for lease in leases]
        self.dispatcher.submit(leased, leased_at=leased_at)
        return {lease.execution_id for lease in leases}

    async def settle(self, timeout_s: float) -> bool:
        """Wait for inserts on their way (their callers may be cancelled), so what they
        leased here is queued before the queue is handed back; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._admits.settle()
        except TimeoutError:
            return False
        return True

    async def take(self) -> int:
        """Claim what fits in the queue, highest priority first; how many."""
        room = self.capacity - self.dispatcher.backlog
        if room <= 0:
            return 0
        leased_at = time.monotonic()
        claimed = await self.store.claim_many(self.worker_id, room)
        self.dispatcher.submit(claimed.leased, leased_at=leased_at)
        self._parked_here = max(0, self._parked_here - len(claimed.leased))
        if not claimed.more:
            self._parked_here = 0  # nothing left to claim: whatever was parked is taken
        self._claimed.set()
        # A full set of candidates: more may be parked, even if a racing worker took
        # some of these. None taken at all (all raced away, or their leases not yet
        # expired on the server's clock): wait for the timer rather than spin.
        self._parked = claimed.more and bool(claimed.leased)
        return len(claimed.leased)

    async def room(self) -> None:
        """Return once intake may take more in: while this replica has parked its
        share, it waits for claims."""
        while self._parked_here >= self.max_parked:
            self._claimed.clear()
            await self._claimed.wait()

    async def run(self) -> None:
        """Top up the queue while parked work waits, else on the timer; never fails."""
        republish_at = 0.0
        while True:
            raise_if_cancelling()
            # Half empty, or the timer: a busy replica still takes what fits and
            # republishes, so nothing waits for it to go quiet.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.dispatcher.wait_for_room(self.capacity // 2 + 1), self.interval_s
                )
            try:
                taken = await self.take()
                if taken:
                    logger.debug("claimed %d executions nobody held", taken)
            except (StoreUnavailable, TimeoutError) as exc:
                logger.warning("claiming executions failed, trying again: %s", exc)
                self._parked = False  # not known any more; the timer looks again
            except Exception:
                logger.exception("claiming executions failed unexpectedly")
                self._parked = False
            if self.republisher is not None and time.monotonic() >= republish_at:
                republish_at = time.monotonic() + self.interval_s
                await self._republish(self.republisher)
            if not self._parked:
                await self._nap()

    async def _republish(self, republisher: Republisher) -> None:
        try:
            await republisher.round()
        except (StoreUnavailable, BusUnavailable, TimeoutError) as exc:
            logger.warning("republishing delta events failed, trying again: %s", exc)
        except Exception:
            logger.exception("republishing delta events failed unexpectedly")

    async def _nap(self) -> None:
        """Until something is parked here, or the timer for others' parked or lost work."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.interval_s)
        self._wake.clear()
