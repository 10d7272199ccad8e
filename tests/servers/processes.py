"""Server processes owned by the test session: started on demand, always stopped.

A `ManagedProcess` runs one server binary in its own process group, writes its output
to a log file under the session's tmp dir, and knows how to tell when the server is
ready. Crash tests get the blunt instruments too: SIGKILL, SIGSTOP/SIGCONT and a
restart on the same port and data directory.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

# Short enough that readiness costs almost nothing on top of the server's own startup.
_POLL_INTERVAL_S = 0.02
# A first start that dies at once is most likely a lost race for the port.
_FIRST_START_ATTEMPTS = 3
_LOG_TAIL_BYTES = 6000
# A server still answering this long after SIGTERM has not begun to shut down.
_RESIGNAL_AFTER_S = 0.3


class ServerStartError(RuntimeError):
    """A server did not become ready; the message carries the tail of its log."""


class _ExitedDuringStartup(ServerStartError):
    pass


class UnsupportedOperation(RuntimeError):
    """A lifecycle operation on a server the tests did not start."""


_open: set[ManagedProcess] = set()


def open_servers() -> list[ManagedProcess]:
    """Servers created and not yet closed, for healing between tests."""
    return list(_open)


@atexit.register
def _close_leftovers() -> None:
    # Fixture finalizers normally do this; atexit covers interpreters torn down in
    # ways that skip them, so no server outlives the session.
    for server in list(_open):
        server.close()


def log_tail(path: Path, max_bytes: int = _LOG_TAIL_BYTES) -> str:
    """The last bytes of a log file as text, or a note that there is none."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - max_bytes))
            return log.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"


class ManagedProcess(abc.ABC):
    """One server process: `start`, `stop`, `kill`, `pause`, `resume`, `restart`.

    Ports are chosen once, before the first start; later starts reuse them and the data
    directory, so a restart looks to clients like the same server coming back.
    """

    def __init__(
        self,
        name: str,
        work_dir: Path,
        *,
        startup_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self.work_dir = work_dir
        self.log_path = work_dir / f"{name}.log"
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.startup_seconds: float | None = None
        """Seconds from spawn to ready, of the last successful start."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._has_ports = False
        self._closed = False
        work_dir.mkdir(parents=True, exist_ok=True)
        _open.add(self)

    # -- what a concrete server provides ------------------------------------------------

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
        """Release client resources held for the server."""

    def _nudge_shutdown(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Called repeatedly while waiting for a SIGTERMed server to exit."""

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """The process is alive (paused counts as alive)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_paused(self) -> bool:
        return self._paused and self.running

    def start(self) -> None:
        """Start the server and wait until it is ready."""
        if self._closed:
            raise RuntimeError(f"{self.name} was closed")
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._proc = None
        self._paused = False
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
            if self._paused:
                # A stopped process would only see SIGTERM once continued.
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
        self._proc = None
        self._paused = False

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to flush or clean up."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(signal.SIGKILL)
            proc.wait()
        self._proc = None
        self._paused = False

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
        if self._closed:
            return
        self._closed = True
        _open.discard(self)
        try:
            # Clients first: pymongo's close() ends sessions on the server and, with the
            # server gone, waits out its whole server-selection timeout.
            self._on_close()
        finally:
            self.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    # -- internals ----------------------------------------------------------------------

    def _spawn_and_wait(self) -> None:
        argv = self._command()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            started = time.monotonic()
            # Own process group: Ctrl-C in the terminal reaches pytest only, and the
            # finalizer decides how the server ends; signals then go to the group.
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
                start_new_session=True,
            )
        deadline = started + self.startup_timeout_s
        while True:
            returncode = self._proc.poll()
            if returncode is not None:
                self._proc = None
                raise _ExitedDuringStartup(
                    f"{self.name} exited with code {returncode} during startup "
                    f"({' '.join(argv)}); log {self.log_path}:\n{self.log_tail()}"
                )
            if self._probe_ready():
                self.startup_seconds = time.monotonic() - started
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise ServerStartError(
                    f"{self.name} not ready after {self.startup_timeout_s:.0f} s "
                    f"({' '.join(argv)}); log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def _signal(self, signum: signal.Signals) -> None:
        proc = self._proc
        # Only while the leader is unreaped: until then its pid, which is the group id,
        # cannot have been reused by an unrelated process.
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

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
