"""A small client for services that talk to blobflow over NATS.

Producers publish blob events (§3), services register their definitions at
start (§6), and delta consumers tail delta events (§8):

    client = BlobflowClient(nc, token=os.environ.get("BLOBFLOW_API_TOKEN"))
    await client.register_folder(Path("definitions"))
    await client.publish_event("created", blob_id="b1", user_id="u1", metadata={...})
    async with client.deltas(provider_id="book-writer") as feed:
        async for event in feed:
            ...
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from blobflow.core.jsonvalues import compact_json, loads
from blobflow.core.sources import KIND_FOLDERS, read_paths
from blobflow.core.subjects import REGISTER_SUBJECT, StreamNames, encode_token
from blobflow.errors import DefinitionError
from blobflow.messaging.control import authorization

logger = logging.getLogger(__name__)

_JSON_HEADERS = {"Content-Type": "application/json"}
NO_RESPONDERS_FIRST_DELAY_S = 0.1
NO_RESPONDERS_MAX_DELAY_S = 2.0


class BlobflowClient:
    def __init__(
        self,
        nc: NatsClient,
        *,
        names: StreamNames | None = None,
        register_subject: str = REGISTER_SUBJECT,
        publish_timeout_s: float = 5,
        token: str | None = None,
    ) -> None:
        """`token`: an admin API token, sent with registrations as `Authorization: Bearer
        <token>` (blobflow needs one when it has BLOBFLOW_API_TOKENS)."""
        self.nc = nc
        self.js = nc.jetstream()
        self.names = names or StreamNames()
        self.register_subject = register_subject
        self.publish_timeout_s = publish_timeout_s
        self.token = token

    async def publish_event(
        self,
        kind: Literal["created", "updated"],
        *,
        blob_id: str,
        user_id: str,
        event_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        content: Any = None,
        previous: Mapping[str, Any] | None = None,
        provider_ids: Sequence[str] | None = None,
        **extra: Any,
    ) -> str:
        """Publish a blob event once JetStream has stored it; returns its `event_id`.

        `Nats-Msg-Id: <event_id>` makes JetStream drop a retry with the same id inside
        its duplicate window; blobflow dedupes beyond it. Fields left None are left out.
        """
        subjects = {"created": self.names.created_subject, "updated": self.names.updated_subject}
        if kind not in subjects:
            raise ValueError(f"kind must be 'created' or 'updated', not {kind!r}")
        event_id = uuid.uuid4().hex if event_id is None else event_id
        event: dict[str, Any] = {"event_id": event_id, "blob_id": blob_id, "user_id": user_id}
        optional = {"metadata": metadata, "content": content, "previous": previous}
        optional["provider_ids"] = None if provider_ids is None else list(provider_ids)
        event |= {name: value for name, value in optional.items() if value is not None}
        event |= extra
        await self.js.publish(
            subjects[kind],
            compact_json(event).encode(),
            timeout=self.publish_timeout_s,
            headers={"Nats-Msg-Id": event_id},
        )
        return event_id

    async def register(self, bundle: Mapping[str, Any], *, timeout_s: float = 10) -> dict[str, Any]:
        """Send a bundle, with the client's token; the §6 reply.

        Services register at their own start, which may come before blobflow's: while
        no blobflow listens, the request is sent again (0.1 s apart, doubling to 2 s)
        within `timeout_s`. NoRespondersError when none listened in that time,
        TimeoutError when one listened but did not answer in it. Without a valid
        admin token, when blobflow has BLOBFLOW_API_TOKENS, the reply is
        `{"ok": false, "errors": [{"kind": "auth", ...}]}`.
        """
        data = compact_json(dict(bundle)).encode()
        headers = {**_JSON_HEADERS, **authorization(self.token)}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay_s = NO_RESPONDERS_FIRST_DELAY_S
        while True:
            try:
                message = await self.nc.request(
                    self.register_subject,
                    data,
                    timeout=max(deadline - loop.time(), 0.001),
                    headers=headers,
                )
                break
            except NoRespondersError:
                if deadline - loop.time() <= delay_s:
                    raise
                await asyncio.sleep(delay_s)
                delay_s = min(2 * delay_s, NO_RESPONDERS_MAX_DELAY_S)
        reply = loads(message.data)
        if not isinstance(reply, dict):
            raise ValueError(f"unexpected registration reply: {message.data[:200]!r}")
        return reply

    async def register_folder(self, folder: Path, *, timeout_s: float = 10) -> dict[str, Any]:
        """Register the files of `folder`'s schemas/, workflows/ and providers/ as one bundle.

        Files that cannot be read or parsed raise DefinitionError before anything is sent;
        the reply names the other problems by kind and id.
        """
        documents, problems = read_paths([folder])
        if problems:
            raise DefinitionError(problems)
        bundle = {
            key: [document.data for document in documents if document.kind == kind]
            for key, kind in KIND_FOLDERS.items()
        }
        return await self.register(bundle, timeout_s=timeout_s)

    def deltas(
        self,
        *,
        provider_id: str | None = None,
        blob_id: str | None = None,
        deliver_new_only: bool = True,
    ) -> DeltaFeed:
        """Delta events of one provider and/or blob (all when None), as decoded objects.

        Iterate with `async for`; enter it with `async with` first to be subscribed
        before you publish or trigger anything, and to close the consumer at the end.
        """
        provider = "*" if provider_id is None else encode_token(provider_id)
        blob = "*" if blob_id is None else encode_token(blob_id)
        subject = f"{self.names.deltas_prefix}.{provider}.{blob}"
        return DeltaFeed(self.js, self.names.deltas, subject, deliver_new_only=deliver_new_only)


class DeltaFeed:
    """An ordered, ephemeral JetStream consumer on the DELTAS stream, as an async iterator.

    Ordered: nats-py recreates the consumer after a gap or missed heartbeats and resumes
    after the last message it delivered, so no event is skipped or repeated. Events that
    are not JSON objects (not written by blobflow) are logged and skipped.
    """

    def __init__(
        self, js: JetStreamContext, stream: str, subject: str, *, deliver_new_only: bool
    ) -> None:
        self.js = js
        self.stream = stream
        self.subject = subject
        self.deliver_new_only = deliver_new_only
        self._sub: JetStreamContext.PushSubscription | None = None
        self._closed = False

    async def start(self) -> None:
        """Subscribe, if not yet done: events stored from now on (or all) will come."""
        if self._sub is not None or self._closed:
            return
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        after = 0
        if self.deliver_new_only:
            # DeliverPolicy.NEW would do, but nats-py resets an ordered consumer that has
            # delivered nothing yet (e.g. after a reconnect) from stream sequence 1, which
            # would replay the whole history. An explicit start, and the reset point set to
            # match, keeps "new only" across resets.
            after = (await self.js.stream_info(self.stream)).state.last_seq
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1
            )
        sub = await self.js.subscribe(
            self.subject, stream=self.stream, config=config, ordered_consumer=True
        )
        jsi = getattr(sub._sub, "_jsi", None)
        if jsi is not None and getattr(jsi, "_sseq", None) == 0:
            jsi._sseq = after
        self._sub = sub

    def __aiter__(self) -> DeltaFeed:
        return self

    async def __anext__(self) -> dict[str, Any]:
        await self.start()
        if self._sub is None:
            raise StopAsyncIteration
        # Ends when the feed is closed or the connection is: nats-py stops the iterator.
        async for message in self._sub.messages:
            try:
                event = loads(message.data)
            except ValueError as exc:
                logger.warning("skipped a delta event on %s: %s", message.subject, exc)
                continue
            if isinstance(event, dict):
                return event
            logger.warning("skipped a delta event on %s: not a JSON object", message.subject)
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Unsubscribe; the server removes the ephemeral consumer once nobody listens."""
        self._closed = True
        sub, self._sub = self._sub, None
        if sub is None:
            return
        try:
            await sub.unsubscribe()
        except NatsError as exc:  # the connection closed already: nothing to undo
            logger.debug("delta feed closed with %r", exc)

    async def __aenter__(self) -> DeltaFeed:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
