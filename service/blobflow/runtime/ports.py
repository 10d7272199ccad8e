"""What the runtime needs of the world, as Protocols.

The adapters meet them (`blobflow.store`, `blobflow.messaging`,
`blobflow.downstream`) and `blobflow.app` wires them in; tests pass
in-memory ones. Adapters raise blobflow's own errors, never a driver's:
`StoreUnavailable` (and `WriteRejected`) for the database, `BusUnavailable`
for NATS, `UnstorableError` for data the database cannot hold, and
`LeaseLost` for a fenced write that another worker's lease has fenced out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from blobflow.core.compiler import CompiledWorkflow
from blobflow.core.deltas import DeltaDraft
from blobflow.core.leases import Claimed, Lease
from blobflow.core.records import Execution, LogLine

Document = dict[str, Any]


class ExecutionStore(Protocol):
    """Executions under leases, their deltas, and what is left to publish."""

    lease_ms: int

    async def create_many(self, executions: Sequence[Execution], owner: str) -> list[Lease]:
        """Insert executions leased to `owner`; those that existed already are skipped."""
        ...

    async def park_many(self, executions: Sequence[Execution]) -> set[str]:
        """Insert executions nobody holds, for any worker to claim; the ids that were new."""
        ...

    async def claim(self, execution_id: str, owner: str) -> tuple[Execution, Lease] | None:
        """Take a pending execution, or a running one whose lease expired."""
        ...

    async def claim_many(self, owner: str, limit: int) -> Claimed:
        """Take up to `limit` executions no live worker holds, highest priority first."""
        ...

    async def checkpoint(
        self, lease: Lease, execution: Execution, logs: Sequence[LogLine] = ()
    ) -> bool:
        """Write the execution's state, renewing the lease; True: a cancel was requested."""
        ...

    async def renew(self, lease: Lease) -> bool:
        """Extend the lease; True: a cancel was requested."""
        ...

    async def release(self, leases: Sequence[Lease]) -> None:
        """Hand executions back at once, for any worker to claim."""
        ...

    async def request_cancel(self, execution_id: str) -> bool:
        """Record that the execution must be cancelled; False when it has finished."""
        ...

    async def get(self, execution_id: str) -> Execution | None: ...

    async def get_with_owner(self, execution_id: str) -> tuple[Execution, str | None] | None:
        """The execution and the worker holding a live lease on it, if any."""
        ...

    async def store_deltas(
        self, execution: Execution, drafts: Sequence[DeltaDraft]
    ) -> list[Document]:
        """Store the execution's deltas exactly once, with gapless per-blob versions."""
        ...

    async def unpublished(self, limit: int = 100) -> list[Execution]:
        """Completed executions whose delta events were not all confirmed."""
        ...

    async def deltas_of(self, execution_id: str) -> list[Document]: ...

    async def mark_published(self, execution_id: str) -> None: ...


class DeltaPublisher(Protocol):
    async def publish(self, deltas: Sequence[Mapping[str, Any]]) -> bool:
        """Publish every delta event; False when they were not all confirmed."""
        ...


class WorkflowVersions(Protocol):
    """Every registered version of a workflow, for runs that started on an older one."""

    async def compiled_workflow(
        self, workflow_id: str, version: int
    ) -> CompiledWorkflow | None: ...


class Delivery(Protocol):
    """One blob event message, as intake handles it."""

    @property
    def data(self) -> bytes: ...

    @property
    def subject(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str] | None: ...

    @property
    def stream_sequence(self) -> int | None: ...

    async def ack(self) -> None:
        """Acknowledge, and wait for the server to confirm it."""
        ...

    async def nak(self, delay_s: float | None) -> None:
        """Hand the message back, for redelivery after `delay_s`."""
        ...


class DeadLetters(Protocol):
    async def send(self, letter: bytes, msg_id: str) -> None:
        """Store a dead letter; `BusUnavailable` until it is confirmed."""
        ...


class OwnerChannel(Protocol):
    """Asks the replica that runs an execution to cancel it."""

    async def ask_cancel(
        self, owner: str, execution_id: str, timeout_s: float, *, token: str | None = None
    ) -> bool | None:
        """Whether the owner cancelled it (False: not running there); None if it did not
        answer in time, or refused. `token`: the caller's API token, which the owner
        checks itself (it may cancel only what that token may see)."""
        ...
