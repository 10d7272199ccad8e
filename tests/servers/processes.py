"""Server processes owned by the test session: started on demand, always stopped.

The lifecycle (own process group, log file, readiness, SIGTERM then SIGKILL, the
SecantusDB quirks) is blobflow's own, in blobflow.devtools.managed_process; this module adds
what only tests need. Crash tests get the blunt instruments: SIGKILL, SIGSTOP/SIGCONT
and a restart on the same port and data directory. Servers are started explicitly
(`with Server(...) as s: s.start()`), and every one not yet closed is listed by
`open_servers()` so fixtures can heal what a test left down or paused.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from blobflow.devtools import managed_process
from blobflow.devtools.managed_process import log_tail
from blobflow.errors import EmbeddedServerError

__all__ = [
    "ManagedProcess",
    "ServerStartError",
    "UnsupportedOperation",
    "log_tail",
    "open_servers",
]

ServerStartError = EmbeddedServerError
"""A server did not become ready; the message carries the tail of its log."""


class UnsupportedOperation(RuntimeError):
    """A lifecycle operation on a server the tests did not start."""


_open: set[ManagedProcess] = set()


def open_servers() -> list[ManagedProcess]:
    """Servers created and not yet closed, for healing between tests."""
    return list(_open)


@atexit.register
def _close_leftovers() -> None:
    # Fixture finalizers normally do this; atexit covers interpreters torn down in
    # ways that skip them. close() also releases the fixtures' clients first.
    for server in list(_open):
        server.close()


class ManagedProcess(managed_process.ManagedProcess):
    """A server with crash-test controls: `pause`, `resume`, `restart`, `paused`, `down`.

    Ports are chosen once, before the first start; later starts reuse them and the data
    directory, so a restart looks to clients like the same server coming back.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Cooperative: NatsServer(ManagedProcess, EmbeddedNats) passes its arguments on.
        super().__init__(*args, **kwargs)
        self._paused = False
        _open.add(self)

    @property
    def is_paused(self) -> bool:
        return self._paused and self.running

    def start(self) -> None:
        self._paused = False
        super().start()

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers (a hung server)."""
        self._require_running("pause")
        self._signal(signal.SIGSTOP)
        self._paused = True
        self._wait_until_stopped()

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        self._require_running("resume")
        self._signal(signal.SIGCONT)
        self._paused = False

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or SIGKILL) and start again on the same port and data."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def ensure_running(self) -> None:
        """Resume or start the server if a test left it paused or down."""
        if self.is_paused:
            self.resume()
        if not self.running:
            self.start()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """`with server.paused(): ...` hangs the server for the block."""
        self.pause()
        try:
            yield
        finally:
            if self.is_paused:
                self.resume()

    @contextlib.contextmanager
    def down(self, *, kill: bool = False) -> Iterator[None]:
        """`with server.down(): ...` stops (or kills) it for the block, starts it after."""
        if kill:
            self.kill()
        else:
            self.stop()
        try:
            yield
        finally:
            self.ensure_running()

    def close(self) -> None:
        """Stop for good; used by fixture finalizers and at interpreter exit."""
        _open.discard(self)
        super().close()

    def __enter__(self) -> Self:
        # Unlike blobflow's servers, the tests' start on an explicit start(): a fixture
        # decides when, and a test may build one only to see it fail to start.
        return self

    # -- internals ----------------------------------------------------------------------

    def _wait_until_stopped(self, timeout_s: float = 5.0) -> None:
        # kill() returns before every thread has stopped: one running on another CPU
        # goes on briefly, long enough to answer a request sent right after pause().
        if self._proc is None:
            return
        tasks = Path(f"/proc/{self._proc.pid}/task")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                states = [
                    (task / "stat").read_text().rpartition(")")[2].split()[0]
                    for task in tasks.iterdir()
                ]
            except (FileNotFoundError, ProcessLookupError):
                # No procfs (not Linux), or a thread ended while we looked: best effort.
                return
            if all(state in ("T", "t") for state in states):
                return
            time.sleep(0.001)
        raise RuntimeError(f"{self.name} did not stop within {timeout_s} s of SIGSTOP")

    def _require_running(self, operation: str) -> None:
        if not self.running:
            raise RuntimeError(f"cannot {operation} {self.name}: it is not running")
