"""Publishing dead letters (`blobflow.core.dead_letters`) to the dead-letter stream."""

from __future__ import annotations

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from blobflow.errors import BusUnavailable


class DeadLetterPublisher:
    def __init__(self, js: JetStreamContext, subject: str, *, timeout_s: float = 5) -> None:
        self.js = js
        self.subject = subject
        self.timeout_s = timeout_s

    async def send(self, letter: bytes, msg_id: str) -> None:
        """Publish and wait for JetStream's ack; `BusUnavailable` when it did not come, so
        the caller keeps the rejected message unacked until its dead letter is stored."""
        try:
            await self.js.publish(
                self.subject, letter, timeout=self.timeout_s, headers={"Nats-Msg-Id": msg_id}
            )
        except (NatsError, TimeoutError) as exc:
            raise BusUnavailable(f"dead letter not confirmed: {exc!r}") from exc
