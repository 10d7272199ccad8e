"""The MongoDB-wire server for tests: SecantusDB from the venv, or an external URL."""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from tests.servers.ports import LOOPBACK, accepts_connections, free_port
from tests.servers.processes import ManagedProcess, UnsupportedOperation

EXTERNAL_MONGODB_ENV = "BLOBFLOW_TEST_MONGODB_URL"

SyncClient = MongoClient[dict[str, Any]]


class MongoDeployment(Protocol):
    """What tests may rely on, whether the tests started the server or not."""

    @property
    def url(self) -> str: ...

    @property
    def managed(self) -> bool:
        """Whether start/stop/kill/pause/resume work (the tests own the process)."""
        ...

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def restart(self, *, kill: bool = False) -> None: ...
    def ensure_running(self) -> None: ...
    def sync_client(self) -> SyncClient: ...
    def close(self) -> None: ...


def _sync_client(url: str) -> SyncClient:
    # Bounded: a paused or dead server must fail a fixture, not hang the session.
    return MongoClient(url, serverSelectionTimeoutMS=5000, timeoutMS=10000)


class MongoServer(ManagedProcess):
    """SecantusDB (`python -m secantus`) with its data under `work_dir`.

    `durable` adds `--sync-on-commit`: without it SecantusDB loses acknowledged writes
    when the process is SIGKILLed (measured: every write of the last moment), which
    would make crash tests fail for the wrong reason. On loopback the cost is small.
    """

    managed = True

    def __init__(
        self, work_dir: Path, *, durable: bool = True, startup_timeout_s: float = 30.0
    ) -> None:
        super().__init__("secantusdb", work_dir, startup_timeout_s=startup_timeout_s)
        self.durable = durable
        self.data_dir = work_dir / "data"
        # An explicit, empty config file turns off auto-discovery of ./secantusd.toml,
        # ~/.secantus/ and /etc/secantus/, so the machine's settings cannot leak in.
        self.config_path = work_dir / "secantusd.toml"
        self.config_path.write_text("# settings come from the command line\n")
        self.port = 0
        self._client: SyncClient | None = None

    @property
    def url(self) -> str:
        # SecantusDB advertises a one-node replica set named "secantus"; a direct
        # connection avoids depending on that name and on the advertised host.
        return f"mongodb://{LOOPBACK}:{self.port}/?directConnection=true"

    def sync_client(self) -> SyncClient:
        """A shared synchronous client for fixtures (it reconnects after restarts)."""
        if self._client is None:
            self._client = _sync_client(self.url)
        return self._client

    def _choose_ports(self) -> None:
        self.port = free_port()

    def _command(self) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "secantus",
            "--config",
            str(self.config_path),
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--storage-path",
            str(self.data_dir),
        ]
        if self.durable:
            argv.append("--sync-on-commit")
        return argv

    def _probe_ready(self) -> bool:
        # The cheap TCP check first: a MongoClient per probe costs threads.
        if not accepts_connections(self.port):
            return False
        client: SyncClient = MongoClient(
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

    def _on_close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class ExternalMongo:
    """A server given by `BLOBFLOW_TEST_MONGODB_URL`: used as is, never started."""

    managed = False

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: SyncClient | None = None

    @property
    def url(self) -> str:
        return self._url

    def _unsupported(self, operation: str) -> UnsupportedOperation:
        return UnsupportedOperation(
            f"{operation}() needs the SecantusDB the tests start themselves, but "
            f"{EXTERNAL_MONGODB_ENV} points at an external server; unset it to run this test"
        )

    def start(self) -> None:
        raise self._unsupported("start")

    def stop(self) -> None:
        raise self._unsupported("stop")

    def kill(self) -> None:
        raise self._unsupported("kill")

    def pause(self) -> None:
        raise self._unsupported("pause")

    def resume(self) -> None:
        raise self._unsupported("resume")

    def restart(self, *, kill: bool = False) -> None:
        raise self._unsupported("restart")

    def ensure_running(self) -> None:
        """Nothing to do: the server's lifecycle is not ours."""

    def sync_client(self) -> SyncClient:
        if self._client is None:
            self._client = _sync_client(self._url)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
