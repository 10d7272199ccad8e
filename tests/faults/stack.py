"""Replicas of `blobflow serve` as separate processes, against the session's servers.

Each replica logs to its own file (a pipe nobody reads would fill and block it)
and serves HTTP on a port of its own. The stack uses the default stream names
of §2, so fault tests never run beside tests that use them too: `make
test-faults` runs them in a session of their own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

import aiohttp

from blobflow.core.subjects import StreamNames
from tests.servers import MongoDeployment
from tests.servers.ports import free_port
from tests.support import ROOT, eventually

STREAMS = StreamNames()


class Nats(Protocol):
    """A NATS deployment: one server or a cluster."""

    @property
    def url(self) -> str: ...

    def delete_streams(self, prefix: str = "", *, timeout_s: float = 10.0) -> list[str]: ...


@dataclass
class Replica:
    name: str
    port: int
    log_path: Path
    process: asyncio.subprocess.Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown, no release, no final write."""
        self.process.send_signal(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: frozen with its leases, connections and in-flight requests."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    async def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Stack:
    """N replicas sharing one NATS, one database and the downstream at `service_url`."""

    nats_server: Nats
    mongodb: MongoDeployment
    database: str
    service_url: str
    work_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    replicas: list[Replica] = field(default_factory=list)

    async def __aenter__(self) -> Stack:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for replica in self.replicas:
            if replica.process.returncode is None:
                replica.resume()  # a paused process cannot act on SIGKILL's successor
                replica.kill()
                await replica.process.wait()
        for name in (STREAMS.blobs, STREAMS.deltas, STREAMS.dlq):
            self.nats_server.delete_streams(name)

    async def start(
        self,
        name: str | None = None,
        *,
        ready: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> Replica:
        """One more replica; `env` adds to the stack's environment for this one alone."""
        name = name or f"r{len(self.replicas) + 1}"
        port = free_port()
        env = {
            **os.environ,
            "BLOBFLOW_NATS_URL": self.nats_server.url,
            "BLOBFLOW_MONGODB_URL": self.mongodb.url,
            "BLOBFLOW_MONGODB_DATABASE": self.database,
            "BLOBFLOW_DEFINITIONS": str(ROOT),
            "BLOBFLOW_HTTP_PORT": str(port),
            "BLOBFLOW_SERVICE_STUDIO_URL": self.service_url,
            "BLOBFLOW_SERVICE_CORE_URL": self.service_url,
            "BLOBFLOW_LEASE_MS": "3000",
            "BLOBFLOW_LOG_LEVEL": "info",
            **self.env,
            **(env or {}),
        }
        log_path = self.work_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "blobflow.cli.main",
                "serve",
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
            )
        replica = Replica(name, port, log_path, process)
        self.replicas.append(replica)
        if ready:
            await self.wait_ready(replica)
        return replica

    async def wait_ready(self, replica: Replica, timeout_s: float = 30) -> None:
        async def ready() -> bool:
            if replica.process.returncode is not None:
                raise AssertionError(f"{replica.name} exited:\n{replica.log()[-3000:]}")
            try:
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"{replica.url}/readyz") as response,
                ):
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, timeout_s=timeout_s)
