"""Registration (§6): bundles of definitions over NATS request/reply.

Each request is registered as `POST /v1/registry` would (`blobflow.runtime.registration`)
and answered with the same reply.

With tokens configured (`tokens`, from BLOBFLOW_API_TOKENS) a request needs an
admin token in `Authorization: Bearer <token>`, as `POST /v1/registry` does;
without one the reply is an `auth` error and nothing changes.

After a registration that changed something the local replica reloads at
once (`on_change`) and an empty message on `CHANGED_SUBJECT` tells the others,
which reload on it (`reloading_on_notice`), at most once a second however many
such messages arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Final

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from blobflow.core.bundles import internal_error_reply
from blobflow.core.jsonvalues import compact_json
from blobflow.core.subjects import CHANGED_SUBJECT, REGISTER_SUBJECT
from blobflow.core.tokens import ApiToken, TokenTable
from blobflow.messaging.control import caller, header
from blobflow.runtime.registration import Registry, registration_reply
from blobflow.runtime.reloads import RELOAD_INTERVAL_S, CoalescingReloader

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
        tokens: Sequence[ApiToken] = (),
    ) -> None:
        self.nc = nc
        self.store = store
        self.subject = subject
        self.changed_subject = changed_subject
        self.on_change = on_change
        self.drain_timeout_s = drain_timeout_s
        self.tokens = TokenTable(tokens)
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
        refusal = self._refusal(msg)
        try:
            if refusal is not None:
                reply = auth_error_reply(refusal)
            else:
                content_type = header(msg.headers, "Content-Type")
                reply = await registration_reply(self.store, msg.data, content_type)
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

    def _refusal(self, msg: Msg) -> str | None:
        """Why the request may not register anything (logged), or None when it may."""
        who = caller(self.tokens, msg.headers)
        if who is not None and who.admin:
            return None
        if who is None:
            message = "a valid admin token is required (Authorization: Bearer <token>)"
        else:
            message = "registering definitions needs an admin token"
        # Never the token itself: who it named, if anyone.
        user = "no valid token" if who is None else f"user {who.user_id}, not an admin"
        logger.warning("refused a registration request on %s: %s", msg.subject, user)
        return message

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


@contextlib.asynccontextmanager
async def reloading_on_notice(
    nc: NatsClient,
    reload: Callable[[], Awaitable[None]],
    *,
    subject: str = CHANGED_SUBJECT,
    interval_s: float = RELOAD_INTERVAL_S,
) -> AsyncIterator[CoalescingReloader]:
    """Reload on the change notices of `subject`, coalesced: at most once per `interval_s`,
    and always once after the last notice. What a notice says is not read."""
    async with CoalescingReloader(reload, interval_s=interval_s) as reloader:

        async def notice(_msg: Msg) -> None:
            reloader.request()

        sub = await nc.subscribe(subject, cb=notice)
        try:
            yield reloader
        finally:
            # After NATS closed for good the server has forgotten it already.
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()


def auth_error_reply(message: str) -> dict[str, Any]:
    """The §6 reply to a registration without the token it needs."""
    return {"ok": False, "errors": [{"kind": "auth", "id": None, "path": "", "message": message}]}
