"""The engine: turns a matched binding into a durable execution and runs it.

It owns nothing but wiring: the catalog says what to run, the store keeps
the state under a lease, the service clients make the calls. `start` runs a
new execution here; `resume` takes over one that is pending or whose owner's
lease expired, at the first step that had not settled.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from blobflow.core.catalog import Catalog
from blobflow.core.compiler import CompiledWorkflow
from blobflow.core.deltas import DeltaDraft
from blobflow.core.events import BlobEvent
from blobflow.core.leases import Lease
from blobflow.core.records import Execution, LogLine, StepRecord, event_execution_id
from blobflow.core.step_requests import Caller
from blobflow.core.triggers import Binding
from blobflow.errors import LeaseLost
from blobflow.logs import bound
from blobflow.metrics import Metrics
from blobflow.runtime.cancellation import CancelToken, Runs, raise_if_cancelling
from blobflow.runtime.crashpoints import CrashingPersistence, CrashingSink, armed
from blobflow.runtime.executor import Executor, Persistence
from blobflow.runtime.ports import DeltaPublisher, ExecutionStore, WorkflowVersions

logger = logging.getLogger(__name__)


class LeasedPersistence:
    """The store's writes for one execution, fenced by the lease this worker holds.

    A cancel recorded on the execution fires `token`, wherever it was asked for.
    Every checkpoint renews the lease too; `renewed_at` says when it last was.
    """

    def __init__(
        self,
        store: ExecutionStore,
        lease: Lease,
        token: CancelToken,
        renewed_at: float | None = None,
    ) -> None:
        self.store = store
        self.lease = lease
        self.token = token
        self.renewed_at = time.monotonic() if renewed_at is None else renewed_at

    async def checkpoint(self, execution: Execution, logs: Sequence[LogLine]) -> None:
        sent_at = time.monotonic()
        cancel = await self.store.checkpoint(self.lease, execution, logs)
        self.renewed_at = sent_at
        if cancel:
            self.token.cancel()

    async def renew(self) -> None:
        sent_at = time.monotonic()
        cancel = await self.store.renew(self.lease)
        self.renewed_at = sent_at
        if cancel:
            self.token.cancel()

    async def store_deltas(
        self, execution: Execution, drafts: Sequence[DeltaDraft]
    ) -> Sequence[dict[str, Any]]:
        return await self.store.store_deltas(execution, drafts)


def new_execution(
    event: BlobEvent, binding: Binding, workflow: CompiledWorkflow, version: int = 1
) -> Execution:
    """A pending execution of `binding` for `event`; binding defaults sit under the event."""
    return Execution(
        id=event_execution_id(event.event_id, binding.provider_id, binding.workflow_id),
        event_id=event.event_id,
        provider_id=binding.provider_id,
        workflow_id=workflow.id,
        workflow_version=version,
        blob_id=event.blob_id,
        user_id=event.user_id,
        priority=binding.priority,
        input={**binding.input, **event.data},
        steps=tuple(StepRecord(id=step.spec.id) for step in workflow.steps),
    )


class Engine:
    def __init__(
        self,
        catalog: Catalog,
        store: ExecutionStore,
        caller: Caller,
        worker_id: str | None = None,
        sink: DeltaPublisher | None = None,
        versions: WorkflowVersions | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.sink = sink
        self.versions = versions
        self.catalog = catalog
        self.store = store
        self.caller = caller
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self.runs = Runs()

    async def resume(self, execution_id: str, *, cancelled: bool = False) -> Execution | None:
        """Take over `execution_id` if it is pending or its lease expired, and run it.

        None when it is not claimable, or when another worker took it over.
        `cancelled` runs it only to cancel it (see `run_leased`).
        """
        claimed = await self.store.claim(execution_id, self.worker_id)
        if claimed is None:
            return None
        execution, lease = claimed
        return await self.run_leased(execution, lease, cancelled=cancelled)

    async def run_leased(
        self,
        execution: Execution,
        lease: Lease,
        *,
        cancelled: bool = False,
        renewed_at: float | None = None,
    ) -> Execution | None:
        """Run an execution leased to this worker (stored by admission, or claimed).

        `cancelled` runs it only to cancel it: no step starts, the status becomes cancelled.
        `renewed_at` (monotonic) is when the lease last began or was renewed: the
        heartbeat's first renewal is due a third of a lease after it.
        """
        cancelled = cancelled or execution.cancel_requested
        async with self.runs.run(execution.id, cancelled=cancelled) as token:
            workflow = await self._workflow_for(execution)
            if workflow is None:
                return None
            with bound(
                execution_id=execution.id,
                workflow_id=execution.workflow_id,
                event_id=execution.event_id,
            ):
                return await self._run(workflow, execution, lease, token, renewed_at)

    async def _workflow_for(self, execution: Execution) -> CompiledWorkflow | None:
        """The workflow version the execution started on: runs finish on their version."""
        workflow_id, version = execution.workflow_id, execution.workflow_version
        workflow = self.catalog.workflows.get(workflow_id)
        if workflow is not None and self.catalog.version("workflow", workflow_id) == version:
            return workflow
        if self.versions is not None:
            workflow = await self.versions.compiled_workflow(workflow_id, version)
        if workflow is None:
            logger.error(
                "workflow %s v%d of execution %s is gone", workflow_id, version, execution.id
            )
        return workflow

    async def _run(
        self,
        workflow: CompiledWorkflow,
        execution: Execution,
        lease: Lease,
        token: CancelToken,
        renewed_at: float | None,
    ) -> Execution | None:
        spec = workflow.spec
        leased = LeasedPersistence(self.store, lease, token, renewed_at)
        persistence: Persistence = leased
        sink = self.sink
        points = armed()
        if points:
            persistence = CrashingPersistence(leased, points)
            sink = sink and CrashingSink(sink, points)
        executor = Executor(
            workflow,
            execution,
            caller=self.caller,
            persistence=persistence,
            token=token,
            input_schema=self.catalog.validators.get(spec.input_schema_id or ""),
            output_schema=self.catalog.validators.get(spec.output_schema_id or ""),
            sink=sink,
            metrics=self.metrics,
        )
        self.metrics.execution_started(execution.workflow_id)
        result: Execution | None = None
        try:
            async with asyncio.TaskGroup() as group:
                heartbeat = group.create_task(self._heartbeat(leased))
                try:
                    result = await executor.run()
                finally:
                    heartbeat.cancel()
        except* LeaseLost:
            # Another worker took this execution over; it carries on from the
            # last checkpoint, so this one stops without compensating.
            logger.warning("lost the lease of execution %s; stopped", execution.id)
        if result is not None:
            self.metrics.execution_finished(result.workflow_id, result.status)
        return result

    async def _heartbeat(self, leased: LeasedPersistence) -> None:
        """Keep the lease while a long step runs, and notice a cancel recorded meanwhile.

        Renews only when no checkpoint has for a third of the lease: steps that
        finish quickly cost no renewal at all.
        """
        interval_s = self.store.lease_ms / 3000
        while True:
            raise_if_cancelling()
            due_in_s = leased.renewed_at + interval_s - time.monotonic()
            if due_in_s > 0:
                await asyncio.sleep(due_in_s)
                continue
            await leased.renew()
