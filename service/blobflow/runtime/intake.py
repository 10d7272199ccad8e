"""Intake: one blob event message in, durable executions out, then the ack.

The outcome of each message is decided by `handle` and carried out by
`settle`, the one place that acks, naks or terminates. Nothing is acked
before what the message produced is stored: a bad message once its dead
letter is confirmed, a good one once its executions are in MongoDB. A
cancelled handler (shutdown) settles nothing, so the message comes back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from blobflow.core.catalog import Catalog
from blobflow.core.dead_letters import dead_letter, dead_letter_msg_id
from blobflow.core.events import decode_event
from blobflow.core.records import Execution, now
from blobflow.core.subjects import StreamNames
from blobflow.core.triggers import EventKind
from blobflow.errors import BusUnavailable, EventError, StoreUnavailable, UnstorableError
from blobflow.metrics import Metrics
from blobflow.runtime.engine import new_execution
from blobflow.runtime.ports import DeadLetters, Delivery

logger = logging.getLogger(__name__)
RETRY_DELAY_S = 2.0
# Events at least this large are matched in a worker thread, off the event loop.
MATCH_IN_THREAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Literal["ack", "nak"]
    reason: str
    delay_s: float | None = None


class Admit(Protocol):
    """Store new executions durably (see `Admission.admit`); how many were new."""

    def __call__(self, executions: Sequence[Execution]) -> Awaitable[int]: ...


class Intake:
    def __init__(
        self,
        *,
        dead_letters: DeadLetters,
        names: StreamNames,
        catalog: Callable[[], Catalog],
        admit: Admit,
        max_event_bytes: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.dead_letters = dead_letters
        self.names = names
        self.catalog = catalog
        self.admit = admit
        self.max_event_bytes = max_event_bytes
        self.metrics = metrics or Metrics()
        self.kinds: dict[str, EventKind] = {
            names.created_subject: "onCreate",
            names.updated_subject: "onUpdate",
        }

    async def process(self, msg: Delivery) -> Outcome:
        """Handle and settle one message; one message never takes the consumer down."""
        try:
            outcome = await self.handle(msg)
        except Exception:
            logger.exception("handling a blob event failed; it will be redelivered")
            outcome = Outcome("nak", "unexpected error", RETRY_DELAY_S)
        try:
            await settle(msg, outcome)
        except BusUnavailable as exc:
            # Unsettled, the message comes back after AckWait; nothing is lost.
            logger.warning("could not settle a blob event: %s", exc)
        return outcome

    async def handle(self, msg: Delivery) -> Outcome:
        self.metrics.event_received()
        try:
            event = decode_event(msg.data, msg.subject, self.max_event_bytes, self.kinds)
        except EventError as exc:
            return await self._reject(msg, exc)
        catalog = self.catalog()
        if len(msg.data) < MATCH_IN_THREAD_BYTES:
            bindings = catalog.match(event.data, event.kind)
        else:
            # `matches` is linear in the text but costs up to about 1.7 s per MiB for the
            # largest patterns allowed; RE2 lets go of the GIL, so the loop runs on.
            bindings = await asyncio.to_thread(catalog.match, event.data, event.kind)
        executions = [
            new_execution(
                event,
                binding,
                catalog.workflows[binding.workflow_id],
                catalog.version("workflow", binding.workflow_id),
            )
            for binding in bindings
        ]
        try:
            new = await self.admit(executions)
        except UnstorableError as exc:
            # Valid JSON that BSON cannot hold (an integer beyond 64 bits, a NUL
            # in a key): retrying cannot help, so it is bad input.
            return await self._reject(msg, EventError("unstorable", str(exc)))
        except StoreUnavailable as exc:
            logger.warning("event %s not stored, redelivering: %s", event.event_id, exc)
            return Outcome("nak", "store unavailable", RETRY_DELAY_S)
        return Outcome("ack", f"{new} new of {len(executions)} executions")

    async def _reject(self, msg: Delivery, error: EventError) -> Outcome:
        sequence = msg.stream_sequence
        body = dead_letter(
            error.reason,
            error.detail,
            subject=msg.subject,
            stream_sequence=sequence,
            headers=msg.headers,
            payload=msg.data,
            received_at=now(),
        )
        msg_id = dead_letter_msg_id(self.names.blobs, sequence or 0)
        try:
            await self.dead_letters.send(body, msg_id)
        except BusUnavailable as exc:
            logger.warning("dead letter not confirmed, redelivering: %s", exc)
            return Outcome("nak", "dead-letter stream unavailable", RETRY_DELAY_S)
        logger.info("dead-lettered message %s: %s", sequence, error)
        self.metrics.event_rejected(error.reason)
        return Outcome("ack", f"dead-lettered: {error.reason}")


async def settle(msg: Delivery, outcome: Outcome) -> None:
    """The one place a message is acknowledged or handed back."""
    if outcome.action == "ack":
        # Confirmed ack: the executions exist, and a lost ack would only
        # cause a redelivery that creates nothing new.
        await msg.ack()
    else:
        await msg.nak(outcome.delay_s)
