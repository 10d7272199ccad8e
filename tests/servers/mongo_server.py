"""The MongoDB-wire server for tests: SecantusDB from the venv, or an external URL."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from pymongo import MongoClient

from blobflow.devtools.embedded import EmbeddedMongo
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


class MongoServer(ManagedProcess, EmbeddedMongo):
    """SecantusDB (`python -m secantus`) with its data under `work_dir`.

    The process is blobflow's `EmbeddedMongo` (`durable` adds `--sync-on-commit`, which
    keeps acknowledged writes through a SIGKILL, so crash tests fail for the right
    reasons); tests add crash controls and a shared synchronous client.
    """

    managed = True

    def __init__(
        self, work_dir: Path, *, durable: bool = True, startup_timeout_s: float = 30.0
    ) -> None:
        super().__init__(work_dir, durable=durable, startup_timeout_s=startup_timeout_s)
        self._client: SyncClient | None = None

    def sync_client(self) -> SyncClient:
        """A shared synchronous client for fixtures (it reconnects after restarts)."""
        if self._client is None:
            self._client = _sync_client(self.url)
        return self._client

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
