"""Cancel on request, wherever the execution runs.

The request is recorded first (`cancel_requested`), so it survives any
crash: whoever runs the execution next cancels it before its next step.
Then the worker holding the execution's lease is asked directly, by NATS
request/reply on `blobflow.cancel.<worker_id>`: it aborts the in-flight call,
runs the compensations, records the cancel and only then replies. An
execution nobody holds (pending, or its owner died and the lease ran out) is
claimed and cancelled by the worker that received the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Final, Literal

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from service.dispatcher import Dispatcher
from service.engine import Engine
from service.records import TERMINAL, Execution
from service.store import ExecutionStore
from service.subjects import encode_token

logger = logging.getLogger(__name__)
CANCEL_PREFIX: Final = "blobflow.cancel"
# The owner replies once compensations are done; they may call slow services.
CANCEL_WAIT_S: Final = 10.0
MAX_ROUNDS: Final = 3

Outcome = Literal["cancelled", "finished", "requested", "missing"]


def cancel_subject(worker_id: str) -> str:
    return f"{CANCEL_PREFIX}.{encode_token(worker_id)}"


@dataclass(frozen=True, slots=True)
class CancelResult:
    """`cancelled`: it is; `finished`: it had ended before; `requested`: recorded, under way."""

    outcome: Outcome
    execution: Execution | None


class Canceller:
    def __init__(
        self,
        nc: NatsClient,
        store: ExecutionStore,
        engine: Engine,
        dispatcher: Dispatcher,
        *,
        wait_s: float = CANCEL_WAIT_S,
    ) -> None:
        self.nc = nc
        self.store = store
        self.engine = engine
        self.dispatcher = dispatcher
        self.wait_s = wait_s

    async def cancel(self, execution_id: str) -> CancelResult:
        """Cancel and wait for it, up to `wait_s` for a run on another worker."""
        execution: Execution | None = None
        deadline = time.monotonic() + self.wait_s
        for round_number in range(MAX_ROUNDS):
            if time.monotonic() >= deadline:
                break
            found = await self.store.get_with_owner(execution_id)
            if found is None:
                return CancelResult("missing", None)
            execution, owner = found
            if execution.status in TERMINAL:
                # Ended before this request did anything, even if it ended cancelled.
                first = round_number == 0
                outcome: Outcome = (
                    "finished" if first or execution.status != "cancelled" else "cancelled"
                )
                return CancelResult(outcome, execution)
            if not execution.cancel_requested and not await self.store.request_cancel(execution_id):
                continue  # it finished meanwhile: the next read says how
            if owner is None:
                if await self.engine.resume(execution_id, cancelled=True) is None:
                    continue  # another worker claimed it first: ask that one
            elif owner == self.engine.worker_id:
                await self.cancel_here(execution_id)
            elif not await self._ask(owner, execution_id, deadline - time.monotonic()):
                # The owner is gone or slow: the recorded request stands, and
                # whoever takes the execution over cancels it.
                break
        found = await self.store.get_with_owner(execution_id)
        if found is None:
            return CancelResult("missing", None)
        execution = found[0]
        if execution.status == "cancelled":
            return CancelResult("cancelled", execution)
        if execution.status in TERMINAL:
            return CancelResult("finished", execution)
        return CancelResult("requested", execution)

    async def cancel_here(self, execution_id: str) -> bool:
        """Cancel a run of this worker, running or queued; False when it has neither."""
        if await self.engine.cancel_running(execution_id):
            return True
        queued = self.dispatcher.withdraw(execution_id)
        if queued is None:
            return False
        execution, lease = queued
        await self.engine.run_leased(execution, lease, cancelled=True)
        return True

    async def _ask(self, owner: str, execution_id: str, timeout_s: float) -> bool:
        """True once the owner has answered (done or not running there); False if silent."""
        try:
            await self.nc.request(
                cancel_subject(owner), execution_id.encode(), timeout=max(timeout_s, 0.1)
            )
        except NoRespondersError:
            logger.info("owner %s of execution %s is gone", owner, execution_id)
            return False
        except (NatsTimeoutError, NatsError, TimeoutError):
            logger.warning("owner %s did not confirm cancelling %s", owner, execution_id)
            return False
        return True


class CancelResponder:
    """Answers cancel requests addressed to this worker, each in its own task."""

    def __init__(self, nc: NatsClient, canceller: Canceller) -> None:
        self.nc = nc
        self.canceller = canceller

    async def run(self) -> None:
        subject = cancel_subject(self.canceller.engine.worker_id)
        sub = await self.nc.subscribe(subject)
        await self.nc.flush()
        try:
            async with asyncio.TaskGroup() as group:
                async for msg in sub.messages:
                    group.create_task(self._handle(msg))
        finally:
            # After NATS closed for good the server has forgotten it already.
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        execution_id = msg.data.decode("utf-8", "replace")
        try:
            done = await self.canceller.cancel_here(execution_id)
        except Exception:
            logger.exception("cancelling execution %s failed", execution_id)
            done = False
        if msg.reply:
            try:
                await self.nc.publish(msg.reply, b"cancelled" if done else b"not running here")
            except NatsError as exc:
                logger.warning("cannot confirm the cancel of %s: %s", execution_id, exc)
