"""Republishing: delta events NATS did not confirm, published again from the store.

An execution completed with `deltas_published` false has delta events NATS
never confirmed (NATS was down, a publish timed out, the process died between
storing and publishing). Every replica publishes them again, a round at a time
(`Admission.run`, every half lease), oldest execution first; repeats inside
JetStream's duplicate window are dropped by `Nats-Msg-Id`.

Each execution is tried on its own, so one that cannot be published never
holds up another (guarantee 8). One that fails backs off: it is tried again
after one round, then two, four … up to `cap_s`. The backoff lives in memory,
per replica: each replica backs off on its own, and a restarted one afresh.

A stuck execution must not hide newer ones. `unpublished` gives the oldest
first, up to a limit; a round asks for `limit` more than the executions it
tracks (those that failed here), so however many old ones are backing off,
`limit` others are always in view. A round tries those never tried here
first, then those whose backoff is over.

When NATS itself is unavailable every execution fails alike, each publish
perhaps after a timeout. A round in which three fail before anything went
through stops there (a few timeouts per round, not one per execution),
and a failure counts as the execution's own only in a round where another
execution's events went through. Once events go through again, executions
whose failures may have been NATS's are tried in the same round, without
waiting out their backoff, so the backlog goes out as soon as NATS is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from blobflow.core.records import Execution
from blobflow.errors import BusUnavailable
from blobflow.metrics import Metrics
from blobflow.runtime.ports import DeltaPublisher, ExecutionStore

logger = logging.getLogger(__name__)
LIMIT = 100
# Failures not known to be the executions' own while nothing went through: a round
# stops at this many, NATS being most likely unavailable.
NATS_DOWN_AFTER = 3


@dataclass(slots=True)
class Backoff:
    failures: int = 0
    due: float = 0.0
    """`clock()` from which it is tried again."""
    own: bool = False
    """It failed while other executions' events went through: the fault is its own."""


class Republisher:
    """Publishes the delta events of completed executions not yet confirmed.

    `base_s`: the time between rounds, the first backoff; `cap_s`: the longest;
    `limit`: executions not backing off tried in one round, oldest first.
    """

    def __init__(
        self,
        store: ExecutionStore,
        publisher: DeltaPublisher,
        *,
        base_s: float,
        cap_s: float,
        limit: int = LIMIT,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.base_s = base_s
        self.cap_s = cap_s
        self.limit = limit
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.tracked: dict[str, Backoff] = {}
        """Executions that failed here and are still unpublished, by id."""

    def backing_off(self) -> set[str]:
        """The executions a round now would skip."""
        now = self.clock()
        return {key for key, backoff in self.tracked.items() if not self._due(backoff, now)}

    async def round(self) -> int:
        """One round; how many executions had all their events confirmed.

        Store errors end the round (the next one tries again); a publisher's
        failure, even an unexpected error, is the execution's alone.
        """
        now = self.clock()
        found = await self.store.unpublished(self.limit + len(self.tracked))
        present = {execution.id for execution in found}
        # Gone from the list: published (here or by another replica) or removed.
        self.tracked = {k: v for k, v in self.tracked.items() if k in present}
        confirmed: set[str] = set()
        failed: list[str] = []
        try:
            await self._pass(self._chosen(found, now), confirmed, failed, stop=True)
            if confirmed:
                # NATS takes events: those whose failures may have been its fault go now.
                tried = set(failed)
                again = [
                    e
                    for e in found
                    if e.id in self.tracked and not self.tracked[e.id].own and e.id not in tried
                ]
                await self._pass(again, confirmed, failed, stop=False)
        finally:
            for execution_id in failed:
                self._failed(execution_id, now, own=bool(confirmed))
            self.metrics.unpublished(len(found) - len(confirmed))
        return len(confirmed)

    def _chosen(self, found: Sequence[Execution], now: float) -> list[Execution]:
        """Up to `limit` never tried here, then those due again, oldest first each."""
        fresh = [e for e in found if e.id not in self.tracked][: self.limit]
        due = [e for e in found if e.id in self.tracked and self._due(self.tracked[e.id], now)]
        return fresh + due

    async def _pass(
        self, executions: list[Execution], confirmed: set[str], failed: list[str], *, stop: bool
    ) -> None:
        suspect = 0  # failures that may be NATS's, while nothing went through
        for execution in executions:
            if await self._publish(execution):
                confirmed.add(execution.id)
                self.tracked.pop(execution.id, None)
                continue
            failed.append(execution.id)
            backoff = self.tracked.get(execution.id)
            if backoff is None or not backoff.own:
                suspect += 1
            if stop and not confirmed and suspect == NATS_DOWN_AFTER:
                logger.debug("nothing confirmed this round: NATS is likely unavailable")
                return

    async def _publish(self, execution: Execution) -> bool:
        deltas = await self.store.deltas_of(execution.id)
        try:
            published = await self.publisher.publish(deltas)
        except (BusUnavailable, TimeoutError) as exc:
            logger.warning("delta events of execution %s not confirmed: %s", execution.id, exc)
            return False
        except Exception:
            logger.exception("publishing the delta events of execution %s failed", execution.id)
            return False
        if published:
            await self.store.mark_published(execution.id)
        return published

    def _failed(self, execution_id: str, now: float, *, own: bool) -> None:
        backoff = self.tracked.setdefault(execution_id, Backoff())
        backoff.failures += 1
        backoff.own = backoff.own or own
        doublings = min(backoff.failures - 1, 32)  # the cap is reached long before
        backoff.due = now + min(self.base_s * 2**doublings, self.cap_s)

    def _due(self, backoff: Backoff, now: float) -> bool:
        # Rounds come every `base_s`: what falls due before the next one is tried now.
        return backoff.due <= now + self.base_s / 2
