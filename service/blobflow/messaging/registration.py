"""Registration (§6): bundles of definitions over NATS request/reply.

Each request is registered as `POST /v1/registry` would (`blobflow.runtime.registration`)
and answered with the same reply.

After a registration that changed something the local replica reloads at
once (`on_change`) and an empty message on `CHANGED_SUBJECT` tells the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Final

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from blobflow.core.bundles import internal_error_reply
from blobflow.core.jsonvalues import compact_json
from blobflow.core.subjects import CHANGED_SUBJECT, REGISTER_SUBJECT
from blobflow.runtime.registration import Registry, registration_reply

logger = logging.getLogger(__name__)

QUEUE_GROUP: Final = "blobflow"
_JSON_HEADERS: Final = {"Content-Type": "application/json"}


class RegistrationResponder:
    """Answers registration requests; one replica of queue group `blobflow` takes each.

    nats-py runs one callback at a time per subscription, so this replica handles
    its registrations one after another: they are rare, and it keeps them simple.
    """

    def __init__(
        self,
        nc: NatsClient,
        store: Registry,
        *,
        subject: str = REGISTER_SUBJECT,
        changed_subject: str = CHANGED_SUBJECT,
        on_change: Callable[[], Awaitable[None]] | None = None,
        drain_timeout_s: float = 10,
    ) -> None:
        self.nc = nc
        self.store = store
        self.subject = subject
        self.changed_subject = changed_subject
        self.on_change = on_change
        self.drain_timeout_s = drain_timeout_s
        self._sub: Subscription | None = None

    async def __aenter__(self) -> RegistrationResponder:
        self._sub = await self.nc.subscribe(self.subject, queue=QUEUE_GROUP, cb=self._handle)
        # Subscribed once the server knows: a request sent right after entering is answered.
        await self.nc.flush()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        sub, self._sub = self._sub, None
        if sub is None or self.nc.is_closed:
            return
        try:
            # Drain, not unsubscribe: unsubscribing cancels a registration in progress
            # and its requester would get no reply.
            async with asyncio.timeout(self.drain_timeout_s):
                await sub.drain()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated
        except (NatsError, TimeoutError) as exc:
            # The server was told first thing, so no new request arrives; one in
            # progress still finishes and replies on its own.
            logger.warning("registration subscription not drained cleanly: %r", exc)

    async def _handle(self, msg: Msg) -> None:
        if not msg.reply:
            logger.warning("registration request on %s has no reply subject; ignored", msg.subject)
            return
        try:
            reply = await registration_reply(self.store, msg.data, _content_type(msg.headers))
            if reply["ok"] and any(result["changed"] for result in reply["results"]):
                await self._announce()
        except Exception as exc:
            logger.exception("registration request failed")
            reply = internal_error_reply(exc)
        try:
            # Not msg.respond(): nats-py would echo the request's headers in the reply.
            await self.nc.publish(msg.reply, compact_json(reply).encode(), headers=_JSON_HEADERS)
        except Exception:
            logger.exception("cannot send the registration reply")

    async def _announce(self) -> None:
        """Reload here, then tell the other replicas; failures are logged, as it is stored."""
        if self.on_change is not None:
            try:
                await self.on_change()
            except Exception:
                logger.exception("reloading definitions after a registration failed")
        try:
            await self.nc.publish(self.changed_subject, b"")
        except Exception:
            logger.exception("cannot announce changed definitions on %s", self.changed_subject)


def _content_type(headers: Mapping[str, str] | None) -> str | None:
    # Header names are case-insensitive in HTTP; NATS clients spell them as they like.
    return next((v for k, v in (headers or {}).items() if k.lower() == "content-type"), None)
