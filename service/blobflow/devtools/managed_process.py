"""A server child process: started, probed until ready, stopped, never left behind.

`ManagedProcess` is the lifecycle shared by the embedded servers (blobflow.devtools.embedded)
and the tests' crash tools: a process group of its own, a log file, readiness polled
against a deadline, SIGTERM then SIGKILL, and an atexit hook that stops, in reverse
start order, whatever is still running when the interpreter exits.
"""

from __future__ import annotations

import abc
import asyncio
import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from blobflow.errors import EmbeddedServerError

LOOPBACK = "127.0.0.1"
# Short enough that readiness costs almost nothing on top of the server's own startup.
_POLL_INTERVAL_S = 0.02
# A first start that dies at once is most likely a lost race for the port.
_FIRST_START_ATTEMPTS = 3
_LOG_TAIL_BYTES = 6000
# A server still answering this long after SIGTERM has not begun to shut down.
_RESIGNAL_AFTER_S = 0.3


class _ExitedDuringStartup(EmbeddedServerError):
    pass


# Started and not yet stopped, in start order, for the atexit fallback.
_running: list[ManagedProcess] = []


@atexit.register
def _stop_leftovers() -> None:
    for server in reversed(list(_running)):
        server.stop()


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now, picked by the kernel.

    The race until the server binds it is covered by `ManagedProcess.start`, which
    retries a first start on new ports.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def accepts_connections(port: int, host: str = LOOPBACK, timeout_s: float = 0.2) -> bool:
    """Whether something accepts a TCP connection on the port now."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def log_tail(path: Path, max_bytes: int = _LOG_TAIL_BYTES) -> str:
    """The last bytes of a log file as text, or a note that there is none."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - max_bytes))
            return log.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"


class ManagedProcess(abc.ABC):
    """One server process: `start`, `stop`, `kill`, `close`; `url`, `port`, `log_path`.

    Ports are chosen before the first start; later starts reuse them and the data
    folder, so a restart looks to clients like the same server coming back.
    """

    data_dir: Path

    def __init__(
        self,
        name: str,
        work_dir: Path,
        *,
        startup_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        # Absolute: the server process may run from another working directory.
        self.work_dir = work_dir.resolve()
        self.log_path = self.work_dir / f"{name}.log"
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.port = 0
        self.startup_seconds: float | None = None
        """Seconds from spawn to ready, of the last successful start."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._has_ports = False
        self._closed = False
        work_dir.mkdir(parents=True, exist_ok=True)

    # -- what a concrete server provides ------------------------------------------------

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """What clients connect to."""

    @abc.abstractmethod
    def _choose_ports(self) -> None:
        """Pick free ports; called before the first start only."""

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """The argv that runs the server on the chosen ports."""

    @abc.abstractmethod
    def _probe_ready(self) -> bool:
        """One quick, bounded check whether the server serves requests."""

    def _on_close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release client resources held for the server, before it stops."""

    def _nudge_shutdown(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Called repeatedly while waiting for a SIGTERMed server to exit."""

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """The process is alive (a SIGSTOPped one counts as alive)."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server and wait until it is ready; EmbeddedServerError if it is not."""
        if self._closed:
            raise EmbeddedServerError(f"{self.name} was closed")
        if self.running:
            raise EmbeddedServerError(f"{self.name} is already running (pid {self.pid})")
        self._proc = None
        if self._has_ports:
            self._spawn_and_wait()
            return
        for attempt in range(1, _FIRST_START_ATTEMPTS + 1):
            self._choose_ports()
            try:
                self._spawn_and_wait()
            except _ExitedDuringStartup:
                if attempt == _FIRST_START_ATTEMPTS:
                    raise
                continue
            self._has_ports = True
            return

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after `stop_timeout_s`; a no-op when not running."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # A SIGSTOPped process (a debugger, a crash test) sees SIGTERM only once continued.
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            signalled_at = time.monotonic()
            deadline = signalled_at + self.stop_timeout_s
            while proc.poll() is None:
                now = time.monotonic()
                if now >= deadline:
                    self._signal(signal.SIGKILL)
                    proc.wait()
                    break
                self._nudge_shutdown()
                if now - signalled_at >= _RESIGNAL_AFTER_S and self._probe_ready():
                    # Still serving, so the signal was lost: CPython runs handlers on the
                    # main thread only, and when the kernel hands SIGTERM to another
                    # thread while the main thread blocks in Event.wait() (SecantusDB
                    # does), the handler never runs: 1 stop in 20, 1 in 4 under load.
                    self._signal(signal.SIGTERM)
                    signalled_at = now
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=_POLL_INTERVAL_S)
        self._forget()

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to flush or clean up."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(signal.SIGKILL)
            proc.wait()
        self._forget()

    def close(self) -> None:
        """Stop for good: release clients, then stop the process."""
        if self._closed:
            return
        self._closed = True
        try:
            # Clients first: pymongo's close() ends sessions on the server and, with the
            # server gone, waits out its whole server-selection timeout.
            self._on_close()
        finally:
            self.stop()

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        try:
            await run_blocking(self.__enter__)
        except BaseException:
            # Cancelled (Ctrl-C) or failed: __aexit__ will not run, so stop here.
            self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await run_blocking(self.close)

    # -- internals ----------------------------------------------------------------------

    def _spawn_and_wait(self) -> None:
        argv = self._command()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            started = time.monotonic()
            try:
                # Own process group: Ctrl-C in the terminal reaches the parent only, which
                # decides how the server ends; signals then go to the whole group.
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.work_dir,
                    start_new_session=True,
                )
            except OSError as exc:
                raise EmbeddedServerError(f"cannot run {self.name} ({argv[0]}): {exc}") from exc
        _running.append(self)
        deadline = started + self.startup_timeout_s
        while True:
            returncode = self._proc.poll()
            if returncode is not None:
                self._forget()
                raise _ExitedDuringStartup(
                    f"{self.name} exited with code {returncode} during startup "
                    f"({' '.join(argv)}); log {self.log_path}:\n{self.log_tail()}"
                )
            if self._probe_ready():
                self.startup_seconds = time.monotonic() - started
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise EmbeddedServerError(
                    f"{self.name} not ready after {self.startup_timeout_s:g} s "
                    f"({' '.join(argv)}); log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def _forget(self) -> None:
        self._proc = None
        with contextlib.suppress(ValueError):
            _running.remove(self)

    def _signal(self, signum: signal.Signals) -> None:
        proc = self._proc
        # Only while the leader is unreaped: until then its pid, which is the group id,
        # cannot have been reused by an unrelated process.
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)


async def run_blocking(*calls: Callable[[], object]) -> None:
    """Run blocking calls side by side in threads and wait for all of them to end.

    Even when cancelled: a thread cannot be stopped, and closing a server while its
    start() still runs in a thread would leave the process behind. The first error
    raised by a call is raised here.
    """
    work = asyncio.gather(*(asyncio.to_thread(call) for call in calls), return_exceptions=True)
    try:
        results = await asyncio.shield(work)
    except asyncio.CancelledError:
        await work
        raise
    for result in results:
        if isinstance(result, BaseException):
            raise result
