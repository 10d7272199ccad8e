"""nats-server with JetStream, from the venv, on loopback ports of its own.

The process itself is blobflow's `EmbeddedNats`; tests add crash controls and a way to
clean up streams between tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import nats

from blobflow.devtools.embedded import EmbeddedNats, nats_server_binary
from tests.servers.processes import ManagedProcess

__all__ = ["NatsServer", "nats_server_binary", "run_in_own_loop"]

_T = TypeVar("_T")

# JetStream's stream list API pages at 256 entries.
_STREAM_PAGE = 256


def run_in_own_loop(factory: Callable[[], Coroutine[None, None, _T]], timeout_s: float) -> _T:
    """Run a coroutine to completion from synchronous code, e.g. a sync fixture.

    A worker thread gets its own event loop, so the loop pytest-asyncio keeps for the
    current scope is neither used nor replaced.
    """

    async def bounded() -> _T:
        async with asyncio.timeout(timeout_s):
            return await factory()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="run-in-own-loop") as pool:
        return pool.submit(asyncio.run, bounded()).result()


class NatsServer(ManagedProcess, EmbeddedNats):
    """`nats-server -js` with its store under `work_dir`; `.url` for clients."""

    def __init__(self, work_dir: Path, *, startup_timeout_s: float = 30.0) -> None:
        super().__init__(work_dir, startup_timeout_s=startup_timeout_s)
        self.store_dir = self.data_dir

    def delete_streams(self, prefix: str = "", *, timeout_s: float = 10.0) -> list[str]:
        """Delete the streams whose names start with `prefix` (all by default).

        Returns the deleted names. Synchronous, for fixtures; tests on an event loop use
        their own client.
        """
        return run_in_own_loop(lambda: self._delete_streams(prefix), timeout_s)

    async def _delete_streams(self, prefix: str) -> list[str]:
        client = await nats.connect(self.url, connect_timeout=2, allow_reconnect=False)
        try:
            manager = client.jsm()
            names: list[str] = []
            while True:
                page = await manager.streams_info(offset=len(names))
                names.extend(info.config.name or "" for info in page)
                if len(page) < _STREAM_PAGE:
                    break
            doomed = [name for name in names if name and name.startswith(prefix)]
            for name in doomed:
                await manager.delete_stream(name)
            return doomed
        finally:
            await client.close()
