"""The programs measured: blobflow (1 to 3 `blobflow serve` replicas) and the floor."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import aiohttp

from blobflow.devtools.managed_process import free_port

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = ROOT / "bench" / "definitions"


class Contender(Protocol):
    name: str

    @property
    def pids(self) -> list[int]: ...

    async def start(self, nats_url: str, mongodb_url: str, database: str, service: str) -> None:
        """Launch and return once it takes work."""

    async def stop(self) -> int:
        """SIGTERM, wait; the MongoDB commands it sent in all."""


class Blobflow:
    def __init__(
        self,
        replicas: int = 1,
        definitions: Path = DEFINITIONS,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.replicas = replicas
        self.definitions = definitions
        self.env = dict(env or {})
        self.name = f"blobflow, {replicas} replica{'s' if replicas > 1 else ''}"
        self._processes: list[tuple[asyncio.subprocess.Process, int]] = []

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _ in self._processes]

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for _, port in self._processes]

    async def start(self, nats_url: str, mongodb_url: str, database: str, service: str) -> None:
        for _ in range(self.replicas):
            port = free_port()
            env = {
                **os.environ,
                "BLOBFLOW_NATS_URL": nats_url,
                "BLOBFLOW_MONGODB_URL": mongodb_url,
                "BLOBFLOW_MONGODB_DATABASE": database,
                "BLOBFLOW_DEFINITIONS": str(self.definitions),
                "BLOBFLOW_SERVICE_BENCH_URL": service,
                "BLOBFLOW_HTTP_PORT": str(port),
                "BLOBFLOW_LOG_LEVEL": "warning",
                **self.env,
            }
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "blobflow.cli.main", "serve", cwd=ROOT, env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            self._processes.append((process, port))
        async with aiohttp.ClientSession() as http:
            for _, port in self._processes:
                await _until_ready(http, f"http://127.0.0.1:{port}/readyz")

    async def stop(self) -> int:
        commands = 0
        async with aiohttp.ClientSession() as http:
            for _, port in self._processes:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    for line in (await response.text()).splitlines():
                        if line.startswith("blobflow_mongodb_commands_total "):
                            commands += int(float(line.split()[1]))
        for process, _ in self._processes:
            process.send_signal(signal.SIGTERM)
        for process, _ in self._processes:
            await process.wait()
        return commands


class Floor:
    name = "floor"

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pids(self) -> list[int]:
        return [self._process.pid] if self._process else []

    async def start(self, nats_url: str, mongodb_url: str, database: str, service: str) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.floor", nats_url, mongodb_url, database, service,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"the floor did not start: {line!r}")

    async def stop(self) -> int:
        assert self._process is not None
        assert self._process.stdout is not None
        self._process.send_signal(signal.SIGTERM)
        output = (await self._process.stdout.read()).decode()
        await self._process.wait()
        for line in output.splitlines():
            if line.startswith("mongodb_commands "):
                return int(line.split()[1])
        return 0


async def _until_ready(http: aiohttp.ClientSession, url: str, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        try:
            async with http.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never became ready")
