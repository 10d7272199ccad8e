"""Running one execution: the steps in order, then the output and its deltas.

State lives in the `Execution` record and is checkpointed after every step,
so a run that stops anywhere resumes at the first step that had not settled.
Everything the run needs from outside comes through two small protocols, so
the executor is tested against real servers and in-memory stand-ins alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal, Protocol

from blobflow.core.compiler import CompiledStep, CompiledWorkflow
from blobflow.core.deltas import DeltaDraft, derive_deltas
from blobflow.core.jsonschemas import SchemaValidator
from blobflow.core.records import SETTLED_STEPS, Decision, Execution, LogLevel, LogLine, now
from blobflow.core.step_requests import Caller
from blobflow.core.storable import storable_text
from blobflow.errors import DeltaError, ExecutionCancelled, UnstorableError
from blobflow.metrics import Metrics
from blobflow.runtime.cancellation import CancelToken
from blobflow.runtime.ports import DeltaPublisher
from blobflow.runtime.step_calls import call_step, compensate

Ending = Literal["failed", "cancelled"]
Terminal = Literal["completed", "failed", "cancelled"]


class Persistence(Protocol):
    async def checkpoint(self, execution: Execution, logs: Sequence[LogLine]) -> None: ...

    async def store_deltas(
        self, execution: Execution, drafts: Sequence[DeltaDraft]
    ) -> Sequence[dict[str, Any]]: ...


class Executor:
    """Runs `execution` of `workflow` to a terminal status, checkpointing as it goes."""

    def __init__(
        self,
        workflow: CompiledWorkflow,
        execution: Execution,
        *,
        caller: Caller,
        persistence: Persistence,
        token: CancelToken | None = None,
        input_schema: SchemaValidator | None = None,
        output_schema: SchemaValidator | None = None,
        sink: DeltaPublisher | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.workflow = workflow
        self.execution = execution
        self.caller = caller
        self.persistence = persistence
        self.token = token or CancelToken()
        self.input_schema = input_schema
        self.output_schema = output_schema
        self.sink = sink
        self.metrics = metrics
        self.deltas: Sequence[dict[str, Any]] = ()
        self._logs: list[LogLine] = []

    def log(self, level: LogLevel, message: str, step_id: str | None = None) -> None:
        # Messages quote what services and events sent, which may not be storable text.
        self._logs.append(LogLine(now(), level, step_id, storable_text(message)))

    async def checkpoint(self) -> None:
        logs, self._logs = self._logs, []
        try:
            await self.persistence.checkpoint(self.execution, logs)
        except BaseException:
            self._logs = logs + self._logs  # not written: keep them for the next write
            raise

    async def run(self) -> Execution:
        try:
            return await self._run()
        except ExecutionCancelled:
            return await self._end("cancelled", "cancelled on request")

    async def _run(self) -> Execution:
        # Cancelled before it began (a queued or unowned run): no step starts. Once
        # every step has settled there is nothing left to cancel: deltas may be
        # stored already, and they must be published.
        if any(s.status not in SETTLED_STEPS for s in self.execution.steps if s.kind == "step"):
            self.token.check()
        fresh = all(s.status == "pending" for s in self.execution.steps)
        if self.execution.started_at is None or self.execution.status == "pending":
            self.execution = replace(
                self.execution, status="running", started_at=self.execution.started_at or now()
            )
        self.log("info", "execution started" if fresh else "execution resumed")
        if fresh and self.input_schema is not None:
            problems = self.input_schema.violations(self.execution.input)
            if problems:
                detail = "; ".join(str(p) for p in problems)
                return await self._end("failed", f"input does not match its schema: {detail}")
        for step in self.workflow.steps:
            if self.execution.step(step.spec.id).status in SETTLED_STEPS:
                continue
            self.token.check()
            failed = await self._step(step)
            if failed and step.spec.on_failure == "fail":
                error = self.execution.step(step.spec.id).error
                return await self._end("failed", f"step {step.spec.id!r} failed: {error}")
        return await self._complete()

    async def _step(self, step: CompiledStep) -> bool:
        """Run one step and checkpoint it; True when it failed."""
        spec = step.spec
        context = self.context()
        if step.condition is not None:
            result = step.condition.evaluate(context)
            decision = Decision(spec.id, step.condition.text, result)
            self.execution = replace(
                self.execution, decisions=(*self.execution.decisions, decision)
            )
            if not result:
                record = replace(self.execution.step(spec.id), status="skipped")
                self.execution = self.execution.with_step(record)
                self.log("info", f"skipped: condition {step.condition.text!r} is false", spec.id)
                await self.checkpoint()
                return False
        record = await call_step(self, step, context)
        if self.metrics is not None:
            self.metrics.step_finished(self.workflow.id, record)
        before = self.execution
        self.execution = self.execution.with_step(record)
        if record.status == "completed" and spec.variables and isinstance(record.output, dict):
            new_vars = {name: record.output.get(name) for name in spec.variables}
            self.execution = replace(self.execution, vars={**self.execution.vars, **new_vars})
        try:
            await self.checkpoint()
        except UnstorableError as exc:
            # Retrying cannot help: the step fails with the reason, its output dropped.
            error = f"output cannot be stored: {exc}"
            record = replace(record, status="failed", output=None, error=error)
            self.log("error", error, spec.id)
            self.execution = before.with_step(record)
            await self.checkpoint()
        return record.status == "failed"

    def context(self) -> dict[str, Any]:
        """What expressions see: the roots of §5.2."""
        execution = self.execution
        steps = {
            s.id: {"output": s.output, "status": s.status, "error": s.error}
            for s in execution.steps
            if s.kind == "step"
        }
        return {
            "input": execution.input,
            "steps": steps,
            "execution": {"id": execution.id, "event_id": execution.event_id},
            "provider_id": execution.provider_id,
            "workflow": {"id": execution.workflow_id},
            "vars": execution.vars,
        }

    def output(self) -> Any:
        """The workflow's output_map, else the merge of completed steps' object outputs."""
        if self.workflow.output_map is not None:
            return self.workflow.output_map.evaluate(self.context())
        merged: dict[str, Any] = {}
        for step in self.workflow.steps:
            record = self.execution.step(step.spec.id)
            if record.status == "completed" and isinstance(record.output, dict):
                merged.update(record.output)
        return merged

    async def _complete(self) -> Execution:
        # Computed from checkpointed step outputs only, so a resumed run
        # derives exactly the deltas an interrupted one may have stored.
        output = self.output()
        if self.output_schema is not None:
            problems = self.output_schema.violations(output)
            if problems:
                detail = "; ".join(str(p) for p in problems)
                return await self._end("failed", f"output does not match its schema: {detail}")
        try:
            drafts = derive_deltas(output, old_content=self.execution.input.get("content"))
        except DeltaError as exc:
            return await self._end("failed", f"output gives no valid deltas: {exc}")
        try:
            self.deltas = await self.persistence.store_deltas(self.execution, drafts)
        except UnstorableError as exc:
            return await self._end("failed", f"deltas cannot be stored: {exc}")
        if self.metrics is not None:
            self.metrics.stored(len(self.deltas))
        # Published before the final write, which records the outcome: no
        # extra round trip, and a crash in between republishes on resume.
        published = not self.deltas or (
            self.sink is not None and await self.sink.publish(self.deltas)
        )
        self.execution = replace(self.execution, output=output, deltas_published=published)
        self.log("info", f"execution completed with {len(self.deltas)} deltas")
        try:
            return await self._finish("completed", None)
        except UnstorableError as exc:
            # The deltas are stored; only the output record cannot be kept.
            self.log("error", f"output cannot be stored, dropped: {exc}")
            self.execution = replace(self.execution, output=None)
            return await self._finish("completed", None)

    async def _end(self, status: Ending, error: str) -> Execution:
        """Fail or cancel: no further step starts, completed steps are compensated."""
        self.log("error" if status == "failed" else "warning", f"execution {status}: {error}")
        self.execution = self.execution.with_unsettled_steps("cancelled")
        # Compensations run even when this run was cancelled; only a process
        # shutdown (CancelledError) interrupts them, and resume finishes them.
        await compensate(self, self.workflow, self.context())
        return await self._finish(status, error)

    async def _finish(self, status: Terminal, error: str | None) -> Execution:
        moment = now()
        self.execution = replace(
            self.execution,
            status=status,
            error=error,
            completed_at=moment,
            cancelled_at=moment if status == "cancelled" else None,
        )
        await self.checkpoint()
        return self.execution


async def sleep(delay_s: float, token: CancelToken) -> None:
    """Wait between attempts; a cancel request ends the wait at once."""
    await token.guard(asyncio.sleep(delay_s))
