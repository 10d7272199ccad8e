"""Pulling blob events from the durable consumer and feeding them to intake.

Batches start at one message and double while they come back full: a
JetStream fetch of n waits for all n or its timeout, so large batches on a
quiet stream would add latency. Fetching does not wait for the local queue:
once it is full, intake parks new executions in MongoDB (see `admission`),
so the backlog is ordered by priority there; it waits only while this replica
has parked as many as `admission` allows. A watchdog re-binds the
subscription when it stays silent although the consumer has messages pending
(nats.py issue 504: a pull subscription may stop receiving after a server
restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from blobflow.core.subjects import StreamNames
from blobflow.errors import BusUnavailable, NatsGone
from blobflow.runtime.cancellation import raise_if_cancelling

logger = logging.getLogger(__name__)
PullSubscription = JetStreamContext.PullSubscription
RETRY_DELAY_S = 1.0


class JetStreamDelivery:
    """A fetched message as intake handles it (`blobflow.runtime.ports.Delivery`)."""

    __slots__ = ("msg",)

    def __init__(self, msg: Msg) -> None:
        self.msg = msg

    @property
    def data(self) -> bytes:
        return self.msg.data

    @property
    def subject(self) -> str:
        return self.msg.subject

    @property
    def headers(self) -> dict[str, str] | None:
        return self.msg.headers

    @property
    def stream_sequence(self) -> int | None:
        # Only a JetStream delivery has metadata: its reply subject carries it.
        return self.msg.metadata.sequence.stream if self.msg.reply else None

    async def ack(self) -> None:
        try:
            await self.msg.ack_sync()
        except (NatsError, TimeoutError) as exc:
            raise BusUnavailable(f"ack not confirmed: {exc!r}") from exc

    async def nak(self, delay_s: float | None) -> None:
        try:
            await self.msg.nak(delay=delay_s)
        except (NatsError, TimeoutError) as exc:
            raise BusUnavailable(f"nak not sent: {exc!r}") from exc


Handler = Callable[[JetStreamDelivery], Coroutine[Any, Any, object]]


class Consumer:
    def __init__(
        self,
        js: JetStreamContext,
        names: StreamNames,
        handle: Handler,
        *,
        max_batch: int = 32,
        # Short: a graceful stop waits for the fetch in flight, and an idle
        # pull every quarter second costs the server next to nothing.
        fetch_timeout_s: float = 0.25,
        watchdog_s: float = 30.0,
        connection_closed: Callable[[], bool] = lambda: False,
        room: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.room = room
        # nats-py 2.16 does not call closed_cb after running out of reconnect
        # attempts (it cancels its own task first), so intake checks itself.
        self.connection_closed = connection_closed
        self._stopping = asyncio.Event()
        self.js = js
        self.names = names
        self.handle = handle
        self.max_batch = max_batch
        self.fetch_timeout_s = fetch_timeout_s
        self.watchdog_s = watchdog_s
        self.received = 0

    async def run(self) -> None:
        """Consume until stopped; if cancelled instead, messages in hand are not settled
        and come back after AckWait."""
        subscription = await self._subscribe()
        batch = 1
        quiet_since = time.monotonic()
        while not self._stopping.is_set():
            raise_if_cancelling()
            if self.room is not None:
                await self.room()
            try:
                messages = await subscription.fetch(batch, timeout=self.fetch_timeout_s)
            except (NatsTimeoutError, TimeoutError):  # nats-py raises either, by path
                batch = 1
                if time.monotonic() - quiet_since >= self.watchdog_s:
                    subscription = await self._watchdog(subscription)
                    quiet_since = time.monotonic()
                continue
            except NatsError as exc:
                if self.connection_closed():
                    raise NatsGone("the NATS connection closed for good") from exc
                # Disconnected or reconnecting: the client recovers or closes for
                # good (seen above); meanwhile wait, do not spin.
                logger.warning("fetching blob events failed, retrying: %s", exc)
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            quiet_since = time.monotonic()
            self.received += len(messages)
            async with asyncio.TaskGroup() as group:
                for message in messages:
                    group.create_task(self.handle(JetStreamDelivery(message)))
            batch = min(batch * 2, self.max_batch) if len(messages) >= batch else len(messages)

    def stop(self) -> None:
        """Finish the batch in hand, then return: fetched messages are all settled."""
        self._stopping.set()

    async def _subscribe(self) -> PullSubscription:
        """Bind to the durable consumer, waiting out a NATS that is not answering yet."""
        while True:
            try:
                return await self.js.pull_subscribe(
                    "", durable=self.names.consumer, stream=self.names.blobs
                )
            except (NatsError, TimeoutError) as exc:
                logger.warning("binding to the consumer failed, retrying: %s", exc)
                await asyncio.sleep(RETRY_DELAY_S)

    async def _watchdog(self, subscription: PullSubscription) -> PullSubscription:
        try:
            info = await self.js.consumer_info(self.names.blobs, self.names.consumer)
        except (NatsError, TimeoutError) as exc:
            logger.warning("watchdog could not read the consumer: %s", exc)
            return subscription
        if not info.num_pending:
            return subscription
        logger.warning(
            "no messages for %.0f s while %d are pending: re-binding the subscription",
            self.watchdog_s,
            info.num_pending,
        )
        with contextlib.suppress(NatsError, TimeoutError):
            await subscription.unsubscribe()
        return await self._subscribe()
