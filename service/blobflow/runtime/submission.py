"""Manual runs (`POST /v1/workflows/{id}/execute`): the same durable path as events.

A manual run is admitted like an event's executions (see `admission`): leased
to this worker and queued by priority beside event-triggered ones, or parked
for any replica when this one is full; if this worker stops first, the lease
runs out and any replica resumes it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from blobflow.core.compiler import CompiledWorkflow
from blobflow.core.records import Execution, StepRecord
from blobflow.core.storable import unstorable_reason
from blobflow.errors import ServiceStopping, UnstorableError
from blobflow.runtime.dispatcher import Dispatcher
from blobflow.runtime.intake import Admit

MANUAL_EVENT_PREFIX = "manual:"


def manual_execution(
    workflow: CompiledWorkflow,
    version: int,
    *,
    provider_id: str,
    blob_id: str,
    user_id: str,
    input: Mapping[str, Any],
    priority: int = 0,
    idempotency_key: str | None = None,
) -> Execution:
    """A pending manual run; with `idempotency_key`, its id is the one that key from
    this user always gets (`idempotent_id`)."""
    if idempotency_key is None:
        execution_id = uuid.uuid4().hex
    else:
        execution_id = idempotent_id(user_id, idempotency_key)
    return Execution(
        id=execution_id,
        # Unique, so the (event, provider, workflow) key never collides with an event's.
        event_id=MANUAL_EVENT_PREFIX + execution_id,
        provider_id=provider_id,
        workflow_id=workflow.id,
        workflow_version=version,
        blob_id=blob_id,
        user_id=user_id,
        priority=priority,
        input=dict(input),
        steps=tuple(StepRecord(id=step.spec.id) for step in workflow.steps),
    )


def idempotent_id(user_id: str, key: str) -> str:
    """The execution id of a manual run that `user_id` sent with `Idempotency-Key: key`:
    the same key from the same user gives the same execution, from any replica."""
    digest = hashlib.sha256(f"{user_id}\n{key}".encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:32]


class Submitter:
    def __init__(self, dispatcher: Dispatcher, admit: Admit) -> None:
        self.dispatcher = dispatcher
        self.admit = admit

    async def submit(self, execution: Execution) -> bool:
        """Store the execution and queue it here; it then runs like any other. False when
        it was stored already (an idempotent request sent again): nothing new runs."""
        if not self.dispatcher.accepting:
            # Queued here now, it would wait out a lease nobody renews.
            raise ServiceStopping("this replica is stopping; send the run to another")
        problem = unstorable_reason(execution.input)
        if problem is not None:
            raise UnstorableError(problem)
        return await self.admit([execution]) == 1
