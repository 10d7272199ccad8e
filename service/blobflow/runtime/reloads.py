"""Reloading the definitions on notice, at most once per interval (one second).

A message on `blobflow.registry.changed` says "something changed, reload"; anyone
who may publish there can send thousands. Each one only asks (`request`): a
reload starts at once when the last one started at least `interval_s` ago, else
when that much time has passed, and every request made meanwhile is served by
that one reload. A request that arrives while a reload runs gets another one
after it (that reload may have read the definitions just before the change), so
the last notice of a burst is always followed by a reload, at most `interval_s`
later. Nothing a notice says is used: it can only trigger work blobflow would do
anyway (RELIABILITY.md, guarantee 9).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final

logger = logging.getLogger(__name__)
RELOAD_INTERVAL_S: Final = 1.0


class CoalescingReloader:
    """Runs `reload` for requests, at most once per `interval_s`; enter it to start it.

    `clock` and `sleep` are injectable so tests need not wait real seconds.
    """

    def __init__(
        self,
        reload: Callable[[], Awaitable[None]],
        *,
        interval_s: float = RELOAD_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.reload = reload
        self.interval_s = interval_s
        self.clock = clock
        self.sleep = sleep
        self.reloads = 0
        self._wanted = asyncio.Event()
        self._last_start: float | None = None
        self._task: asyncio.Task[None] | None = None

    def request(self) -> None:
        """Ask for a reload; returns at once. Requests made before it starts share it."""
        self._wanted.set()

    async def run(self) -> None:
        """Reload whenever asked, until cancelled; a failed reload is logged and skipped."""
        while True:
            await self._wanted.wait()
            if self._last_start is not None:
                wait_s = self._last_start + self.interval_s - self.clock()
                if wait_s > 0:
                    await self.sleep(wait_s)
            # Cleared before reloading: a request from now on needs a reload after this one.
            self._wanted.clear()
            self._last_start = self.clock()
            self.reloads += 1
            try:
                await self.reload()
            except Exception:
                logger.exception("reloading definitions after a change notice failed")

    async def __aenter__(self) -> CoalescingReloader:
        self._task = asyncio.ensure_future(self.run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait((task,))  # a cancel of the caller itself still propagates
