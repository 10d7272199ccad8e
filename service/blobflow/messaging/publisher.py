"""Delta events (§8): each stored delta published once on `deltas.<provider>.<blob>`.

Publishing happens after the deltas are stored and before the execution's
final write, which records whether it succeeded; the store is the record of
truth, so anything not confirmed by JetStream is published again later
(`blobflow.runtime.republishing`). `Nats-Msg-Id: <delta id>` lets JetStream
drop the repeats that fall inside its duplicate window.

An event must fit in one NATS message: headers and body together at most the
server's `max_payload`, or the server refuses it and closes the connection.
One that would not fit is published with `new_value` and `old_value` null and
`"values_omitted": true`; the stored delta keeps them, for consumers to read
over the HTTP API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from nats.aio.client import DEFAULT_MAX_PAYLOAD_SIZE
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from blobflow.core.jsonvalues import compact_json, rfc3339
from blobflow.core.subjects import delta_subject
from blobflow.metrics import Metrics

logger = logging.getLogger(__name__)
EVENT_FIELDS = (
    "blob_id",
    "provider_id",
    "workflow_id",
    "workflow_version",
    "execution_id",
    "event_id",
    "type",
    "path",
    "new_value",
    "old_value",
    "version",
    "timestamp",
)
VALUE_FIELDS = frozenset({"new_value", "old_value"})
# What nats-py sends before the header lines (`NATS/1.0` CRLF) and after them (CRLF).
_HEADER_FRAME_BYTES = len(b"NATS/1.0\r\n\r\n")


def delta_event(delta: Mapping[str, Any], *, omit_values: bool = False) -> bytes:
    """The JSON of a delta event: the stored delta with `_id` written as `id`; with
    `omit_values`, `new_value` and `old_value` null and `"values_omitted": true`."""
    event: dict[str, Any] = {"id": delta["_id"]}
    for name in EVENT_FIELDS:
        value = None if omit_values and name in VALUE_FIELDS else delta.get(name)
        event[name] = rfc3339(value) if isinstance(value, datetime) else value
    if omit_values:
        event["values_omitted"] = True
    try:
        return orjson.dumps(event)
    except TypeError:  # integers beyond 64 bits
        return compact_json(event).encode()


def header_bytes(headers: Mapping[str, str]) -> int:
    """The size of `headers` as nats-py sends them: one `Name: value` CRLF line each,
    framed; the server counts it with the body against `max_payload`."""
    lines = sum(len(name.encode()) + len(value.encode()) + 4 for name, value in headers.items())
    return _HEADER_FRAME_BYTES + lines


class EventTooLarge(Exception):
    """A delta event over `max_payload` even without its values: it cannot be published."""


class DeltaPublisher:
    """`nc`: the connection under `js`, whose server's `max_payload` (headers included)
    bounds each event; read at each publish, as a reconnect may reach a server with
    another limit. Without it, NATS's default limit is assumed: 1 MiB."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        prefix: str = "deltas",
        timeout_s: float = 5,
        metrics: Metrics | None = None,
        nc: NatsClient | None = None,
    ) -> None:
        self.js = js
        self.metrics = metrics or Metrics()
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.nc = nc

    def max_payload(self) -> int:
        """The largest message, headers and body, the server takes."""
        return DEFAULT_MAX_PAYLOAD_SIZE if self.nc is None else self.nc.max_payload

    async def publish(self, deltas: Sequence[Mapping[str, Any]]) -> bool:
        """Publish every delta; False (logged) when JetStream did not confirm them all."""
        try:
            omitted = await asyncio.gather(*(self._publish_one(delta) for delta in deltas))
        except EventTooLarge as exc:
            logger.error("delta events not confirmed: %s", exc)
            return False
        except (NatsError, TimeoutError) as exc:
            logger.warning("delta events not confirmed, will retry: %s", exc)
            return False
        self.metrics.published(len(deltas))
        self.metrics.values_omitted(sum(omitted))
        return True

    async def _publish_one(self, delta: Mapping[str, Any]) -> bool:
        """Publish one delta event; whether its values were left out to make it fit."""
        subject = delta_subject(delta["provider_id"], delta["blob_id"], self.prefix)
        headers = {"Nats-Msg-Id": str(delta["_id"])}
        room = self.max_payload() - header_bytes(headers)
        data = delta_event(delta)
        omitted = len(data) > room
        if omitted:
            data = delta_event(delta, omit_values=True)
            if len(data) > room:
                raise EventTooLarge(
                    f"the event of delta {delta['_id']} is {len(data)} bytes even without its"
                    f" values, over the {room} bytes NATS takes: it cannot be published"
                )
        await self.js.publish(subject, data, timeout=self.timeout_s, headers=headers)
        return omitted
