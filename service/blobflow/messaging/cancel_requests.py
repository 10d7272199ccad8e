"""Cancel requests between replicas: NATS request/reply on `blobflow.cancel.<worker_id>`.

The replica that runs an execution answers once it has cancelled it
(compensations run, the cancel recorded), or at once when it does not run it.
The request carries the caller's `Authorization: Bearer <token>`; with tokens
configured the owner refuses ("not allowed") one without a token that may cancel
the execution (`Canceller.cancel_for` decides: admin, or the execution's own user).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from blobflow.core.subjects import cancel_subject
from blobflow.messaging.control import authorization, header
from blobflow.runtime.cancellation import Answer

logger = logging.getLogger(__name__)
CANCELLED: Final = b"cancelled"
NOT_RUNNING: Final = b"not running here"
NOT_ALLOWED: Final = b"not allowed"
_REPLIES: Final[dict[Answer, bytes]] = {
    "cancelled": CANCELLED,
    "not running": NOT_RUNNING,
    "not allowed": NOT_ALLOWED,
}


class NatsOwnerChannel:
    """Asks an execution's owner to cancel it (`blobflow.runtime.ports.OwnerChannel`)."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc

    async def ask_cancel(
        self, owner: str, execution_id: str, timeout_s: float, *, token: str | None = None
    ) -> bool | None:
        try:
            reply = await self.nc.request(
                cancel_subject(owner),
                execution_id.encode(),
                timeout=timeout_s,
                headers=authorization(token) or None,
            )
        except NoRespondersError:
            logger.info("owner %s of execution %s is gone", owner, execution_id)
            return None
        except (NatsError, TimeoutError):  # nats-py's TimeoutError is both
            logger.warning("owner %s did not confirm cancelling %s", owner, execution_id)
            return None
        if reply.data == NOT_ALLOWED:
            # The API let the caller; the owner did not: BLOBFLOW_API_TOKENS differ between them.
            logger.warning(
                "owner %s refused to cancel %s (not allowed): do all replicas have the same "
                "BLOBFLOW_API_TOKENS?",
                owner,
                execution_id,
            )
            return None
        return reply.data == CANCELLED


class CancelResponder:
    """Answers cancel requests addressed to this worker, each in its own task.

    `cancel_for` (`Canceller.cancel_for`) decides, given the request's `Authorization`.
    """

    def __init__(
        self,
        nc: NatsClient,
        worker_id: str,
        cancel_for: Callable[[str, str | None], Awaitable[Answer]],
    ) -> None:
        self.nc = nc
        self.worker_id = worker_id
        self.cancel_for = cancel_for

    async def run(self) -> None:
        sub = await self.nc.subscribe(cancel_subject(self.worker_id))
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
        answer: Answer
        try:
            answer = await self.cancel_for(execution_id, header(msg.headers, "Authorization"))
        except Exception:
            logger.exception("cancelling execution %s failed", execution_id)
            answer = "not running"
        if msg.reply:
            try:
                await self.nc.publish(msg.reply, _REPLIES[answer])
            except NatsError as exc:
                logger.warning("cannot confirm the cancel of %s: %s", execution_id, exc)
