"""A 3-node nats-server cluster with JetStream, on loopback, for the leader-loss cases."""

from __future__ import annotations

import asyncio
from pathlib import Path

from blobflow.devtools.embedded import EmbeddedNats
from blobflow.devtools.managed_process import free_port
from tests.servers.processes import ManagedProcess

LOOPBACK = "127.0.0.1"
CLUSTER_NAME = "blobflow-faults"


class ClusterNode(ManagedProcess, EmbeddedNats):
    """One node; its client, monitor and route ports are fixed up front, because every
    node names the others' route ports and a restarted node must come back on its own."""

    def __init__(self, work_dir: Path, name: str, route_port: int, routes: list[int]) -> None:
        super().__init__(work_dir)
        self.server_name = name
        self.route_port = route_port
        self.routes = routes
        self.port = free_port()
        self.monitor_port = free_port()
        self._has_ports = True

    def _command(self) -> list[str]:
        routes = ",".join(f"nats-route://{LOOPBACK}:{port}" for port in self.routes)
        return [
            *super()._command(),
            *("--server_name", self.server_name, "--cluster_name", CLUSTER_NAME),
            *("--cluster", f"nats://{LOOPBACK}:{self.route_port}", "--routes", routes),
        ]


class NatsCluster:
    def __init__(self, work_dir: Path, size: int = 3) -> None:
        route_ports = [free_port() for _ in range(size)]
        self.nodes = [
            ClusterNode(
                work_dir / f"n{index + 1}",
                f"n{index + 1}",
                route_ports[index],
                [port for other, port in enumerate(route_ports) if other != index],
            )
            for index in range(size)
        ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.server_name == name)

    async def start(self) -> None:
        # Together: JetStream is ready on a node only once a quorum is up.
        await asyncio.gather(*(asyncio.to_thread(node.start) for node in self.nodes))

    def delete_streams(self, prefix: str = "", *, timeout_s: float = 10.0) -> list[str]:
        return []  # the cluster and its streams go with the test's directory

    def close(self) -> None:
        for node in self.nodes:
            node.close()
