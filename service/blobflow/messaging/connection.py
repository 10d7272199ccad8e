"""Connecting to NATS with the configured servers and credentials."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from blobflow.config import Settings

logger = logging.getLogger(__name__)
RECONNECT_ATTEMPTS = 120  # two minutes at one a second; then the client closes for good
# A server that stops answering without closing the connection (frozen, partitioned
# away) is noticed after 2 unanswered pings, 10 to 15 s, and the client moves to
# another server of the cluster. nats-py's defaults (120 s, 2) would stall for 4 min.
PING_INTERVAL_S = 5
MAX_OUTSTANDING_PINGS = 2


async def connect_nats(
    settings: Settings,
    closed: asyncio.Event | None = None,
    *,
    on_error: Callable[[Exception], Awaitable[None]] | None = None,
) -> NatsClient:
    """A connected client; `closed` is set when it gives up reconnecting.

    Every failed attempt to connect and every error the server sends is logged as a
    warning, or handed to `on_error` (a coroutine function) instead when given.
    """

    async def on_closed() -> None:
        if closed is not None:
            closed.set()

    async def log_error(exc: Exception) -> None:
        logger.warning("NATS: %s", exc)

    options: dict[str, Any] = {
        "servers": settings.nats_servers,
        "name": "blobflow",
        "max_reconnect_attempts": RECONNECT_ATTEMPTS,
        "reconnect_time_wait": 1,
        "ping_interval": PING_INTERVAL_S,
        "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
        "closed_cb": on_closed,
        "error_cb": on_error or log_error,
    }
    if settings.nats_user:
        options["user"] = settings.nats_user
        if settings.nats_password is not None:
            options["password"] = settings.nats_password.get_secret_value()
    if settings.nats_token is not None:
        options["token"] = settings.nats_token.get_secret_value()
    if settings.nats_creds is not None:
        options["user_credentials"] = str(settings.nats_creds)
    return await nats.connect(**options)
