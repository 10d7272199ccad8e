"""Delta events (§8): each stored delta published once on `deltas.<provider>.<blob>`.

Publishing happens after the deltas are stored and before the execution's
final write, which records whether it succeeded; the store is the record of
truth, so anything not confirmed by JetStream is published again later
(`blobflow.runtime.admission.republish`). `Nats-Msg-Id: <delta id>` lets
JetStream drop the repeats that fall inside its duplicate window.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
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


def delta_event(delta: Mapping[str, Any]) -> bytes:
    """The JSON of a delta event: the stored delta with `_id` written as `id`."""
    event: dict[str, Any] = {"id": delta["_id"]}
    for name in EVENT_FIELDS:
        value = delta.get(name)
        event[name] = rfc3339(value) if isinstance(value, datetime) else value
    try:
        return orjson.dumps(event)
    except TypeError:  # integers beyond 64 bits
        return compact_json(event).encode()


class DeltaPublisher:
    def __init__(
        self,
        js: JetStreamContext,
        *,
        prefix: str = "deltas",
        timeout_s: float = 5,
        metrics: Metrics | None = None,
    ) -> None:
        self.js = js
        self.metrics = metrics or Metrics()
        self.prefix = prefix
        self.timeout_s = timeout_s

    async def publish(self, deltas: Sequence[Mapping[str, Any]]) -> bool:
        """Publish every delta; False (logged) when JetStream did not confirm them all."""
        try:
            await asyncio.gather(*(self._publish_one(delta) for delta in deltas))
        except (NatsError, TimeoutError) as exc:
            logger.warning("delta events not confirmed, will retry: %s", exc)
            return False
        self.metrics.published(len(deltas))
        return True

    async def _publish_one(self, delta: Mapping[str, Any]) -> None:
        subject = delta_subject(delta["provider_id"], delta["blob_id"], self.prefix)
        await self.js.publish(
            subject,
            delta_event(delta),
            timeout=self.timeout_s,
            headers={"Nats-Msg-Id": str(delta["_id"])},
        )
