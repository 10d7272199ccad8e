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
from dataclasses import dataclass
from typing import Final, Literal

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from blobflow.core.records import TERMINAL, Execution
from blobflow.core.subjects import encode_token
from blobflow.runtime.dispatcher import Dispatcher
from blobflow.runtime.engine import Engine
from blobflow.store.executions import ExecutionStore

logger = logging.getLogger(__name__)
CANCEL_PREFIX: Final = "blobflow.cancel"
# The owner replies once compensations are done; they may call slow services.
CANCEL_WAIT_S: Final = 10.0
MAX_ROUNDS: Final = 3
# An execution between its queue and its run is not cancellable for a moment.
NOT_YET_S: Final = 0.05
CANCELLED: Final = b"cancelled"
NOT_RUNNING: Final = b"not running here"

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
        """Cancel and wait for it, up to `wait_s`; then report what the record says.

        Work cut short by the wait is interrupted like a shutdown: the lease
        runs out, and whoever resumes the execution finishes the cancel.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        try:
            async with asyncio.timeout_at(deadline):
                for round_number in range(MAX_ROUNDS):
                    ended = await self._round(execution_id, deadline, first=round_number == 0)
                    if ended is not None:
                        return ended
        except TimeoutError:
            pass
        found = await self.store.get_with_owner(execution_id)
        if found is None:
            return CancelResult("missing", None)
        execution = found[0]
        if execution.status == "cancelled":
            return CancelResult("cancelled", execution)
        if execution.status in TERMINAL:
            return CancelResult("finished", execution)
        return CancelResult("requested", execution)

    async def _round(
        self, execution_id: str, deadline: float, *, first: bool
    ) -> CancelResult | None:
        """One attempt; a result when the execution has ended (or is gone)."""
        found = await self.store.get_with_owner(execution_id)
        if found is None:
            return CancelResult("missing", None)
        execution, owner = found
        if execution.status in TERMINAL:
            # Ended before this request did anything, even if it ended cancelled.
            cancelled = execution.status == "cancelled" and not first
            return CancelResult("cancelled" if cancelled else "finished", execution)
        if not execution.cancel_requested and not await self.store.request_cancel(execution_id):
            return None  # it finished meanwhile: the next read says how
        if owner is None:
            # Nobody holds it: take it and cancel it here (None: another worker was faster).
            await self.engine.resume(execution_id, cancelled=True)
        elif owner == self.engine.worker_id:
            if not await self.cancel_here(execution_id):
                await asyncio.sleep(NOT_YET_S)  # between its queue and its run
        else:
            timeout_s = deadline - asyncio.get_running_loop().time()
            answer = await self._ask(owner, execution_id, timeout_s)
            if answer is None:
                # The owner is gone or slow: the recorded request stands, and
                # whoever runs the execution next cancels it.
                raise TimeoutError
            if not answer:
                await asyncio.sleep(NOT_YET_S)  # between its queue and its run
        return None

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

    async def _ask(self, owner: str, execution_id: str, timeout_s: float) -> bool | None:
        """Whether the owner cancelled it (False: not running there); None if silent."""
        try:
            reply = await self.nc.request(
                cancel_subject(owner), execution_id.encode(), timeout=max(timeout_s, 0.1)
            )
        except NoRespondersError:
            logger.info("owner %s of execution %s is gone", owner, execution_id)
            return None
        except (NatsTimeoutError, NatsError, TimeoutError):
            logger.warning("owner %s did not confirm cancelling %s", owner, execution_id)
            return None
        return reply.data == CANCELLED


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
                await self.nc.publish(msg.reply, CANCELLED if done else NOT_RUNNING)
            except NatsError as exc:
                logger.warning("cannot confirm the cancel of %s: %s", execution_id, exc)
