"""Recovery: executions nobody holds are claimed; unpublished delta events are sent.

A replica that died leaves executions whose leases run out and deltas whose
events were never confirmed. Every replica looks for both on a timer (half a
lease); claiming is atomic, so several replicas looking at once is safe.
"""

from __future__ import annotations

import asyncio
import logging

from nats.errors import Error as NatsError
from pymongo.errors import PyMongoError

from service.cancellation import raise_if_cancelling
from service.dispatcher import Dispatcher
from service.publisher import DeltaPublisher, republish
from service.store import ExecutionStore

logger = logging.getLogger(__name__)


async def recover_once(
    store: ExecutionStore, dispatcher: Dispatcher, publisher: DeltaPublisher | None
) -> int:
    """One round; how many executions were queued to be claimed."""
    claimable = await store.claimable()
    for execution_id, priority in claimable:
        dispatcher.submit_claim(execution_id, priority)
    if publisher is not None:
        await republish(store, publisher)
    return len(claimable)


async def recover_forever(
    store: ExecutionStore,
    dispatcher: Dispatcher,
    publisher: DeltaPublisher | None,
    *,
    interval_s: float,
) -> None:
    while True:
        raise_if_cancelling()
        try:
            found = await recover_once(store, dispatcher, publisher)
            if found:
                logger.info("queued %d executions to take over", found)
        except (PyMongoError, NatsError, TimeoutError) as exc:
            logger.warning("recovery round failed, trying again: %s", exc)
        await asyncio.sleep(interval_s)
