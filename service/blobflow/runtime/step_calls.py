"""Calling a step's service: attempts, retries and backoff; and compensations.

Retried: connection errors, timeouts, 408, 429 and 5xx (honouring
Retry-After); any other 4xx fails at once. Every attempt of a step carries
the same Idempotency-Key, so a downstream service can recognise a retry of
a request whose response was lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from blobflow.core.compiler import CompiledStep, CompiledWorkflow
from blobflow.core.definitions import Compensation
from blobflow.core.expressions import Value
from blobflow.core.jsonvalues import compact_json
from blobflow.core.records import Execution, LogLevel, StepRecord, StepStatus, now
from blobflow.core.retry import is_retryable_status, parse_retry_after, retry_delay_s
from blobflow.core.step_requests import (
    Caller,
    HttpResponse,
    StepRequest,
    build_request,
    idempotency_key,
)
from blobflow.core.storable import storable_text, unstorable_reason
from blobflow.errors import HttpCallError, StepInputError
from blobflow.runtime.cancellation import CancelToken

ERROR_BODY_CHARS = 500
UNSTORABLE_RESPONSE = "unstorable_response"


class Run(Protocol):
    """What a step call needs of the running execution."""

    caller: Caller
    token: CancelToken
    execution: Execution

    def log(self, level: LogLevel, message: str, step_id: str | None = None) -> None: ...


async def call_step(run: Run, step: CompiledStep, context: Mapping[str, Any]) -> StepRecord:
    """Run one step's attempts; the record says completed or failed."""
    spec = step.spec
    record = replace(run.execution.step(spec.id), status="running", started_at=now())
    started = time.monotonic()
    try:
        request = build_request(
            spec.method,
            spec.endpoint,
            step.input_map.evaluate(context),
            run.execution.input,
            idempotency_key(run.execution.id, spec.id),
        )
    except StepInputError as exc:
        run.log("error", f"failed before sending: {exc}", spec.id)
        return _settle(record, started, status="failed", error=str(exc))
    record = replace(record, request=request.snapshot())
    run.log("info", f"started: {spec.method} {spec.service}{request.path}", spec.id)
    attempts = spec.retry.max_attempts
    for attempt in range(1, attempts + 1):
        record = replace(record, attempts=attempt)
        error, retryable, retry_after, response = await _attempt(run, spec.service, request, step)
        if response is not None and error is None:
            output = response.body
            if step.output_map is not None:
                output = step.output_map.evaluate(response.body)
            run.log("info", f"completed: HTTP {response.status}", spec.id)
            return _settle(record, started, status="completed", output=output, http=response.status)
        http = response.status if response is not None else None
        record = replace(record, http_status=http, error=error)
        if not retryable or attempt == attempts:
            break
        delay_s = retry_delay_s(spec.retry.backoff_ms, attempt, retry_after)
        message = f"retrying in {delay_s:.3g} s (attempt {attempt + 1} of {attempts}): {error}"
        run.log("warning", message, spec.id)
        await run.token.guard(asyncio.sleep(delay_s))
    run.log("error", f"failed after {record.attempts} attempt(s): {record.error}", spec.id)
    return _settle(record, started, status="failed", error=record.error, http=record.http_status)


async def _attempt(
    run: Run, service: str, request: StepRequest, step: CompiledStep
) -> tuple[str | None, bool, float | None, HttpResponse | None]:
    """One request: (error, retryable, retry_after_s, response)."""
    try:
        response = await run.token.guard(
            run.caller.call(service, request, step.spec.timeout_seconds)
        )
    except HttpCallError as exc:
        return str(exc), exc.retryable, None, None
    if 200 <= response.status < 300:
        problem = unstorable_reason(response.body)
        if problem is not None:
            # The same answer would come again: fail at once, never retry a write that cannot be.
            return (
                f"{UNSTORABLE_RESPONSE}: the answer cannot be stored: {problem}",
                False,
                None,
                response,
            )
        return None, False, None, response
    body = response.body if isinstance(response.body, str) else compact_json(response.body)
    error = f"HTTP {response.status}: {body[:ERROR_BODY_CHARS]}"
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now())
    return error, is_retryable_status(response.status), retry_after, response


def _settle(
    record: StepRecord,
    started: float,
    *,
    status: StepStatus,
    output: Any = None,
    error: str | None = None,
    http: int | None = None,
) -> StepRecord:
    return replace(
        record,
        status=status,
        output=output,
        error=None if error is None else storable_text(error),
        http_status=http,
        completed_at=now(),
        duration_ms=int((time.monotonic() - started) * 1000),
    )


async def compensate(run: Run, workflow: CompiledWorkflow, context: Mapping[str, Any]) -> None:
    """Call the compensation of every completed step, in reverse completion order.

    A failing compensation is recorded and the others still run. One already
    recorded (by a run that stopped while compensating) is not called again.
    """
    done = {s.id for s in run.execution.steps if s.kind == "compensation"}
    completed = [
        (run.execution.step(step.spec.id), position, step)
        for position, step in enumerate(workflow.steps)
        if step.spec.compensation is not None and step.compensation_input is not None
    ]
    completed = [c for c in completed if c[0].status == "completed" and c[0].id not in done]
    # Times have millisecond resolution; steps run one after another, so among steps
    # that completed within one millisecond the later in the workflow completed last.
    completed.sort(key=lambda c: (c[0].completed_at or now(), c[1]), reverse=True)
    for _, _, step in completed:
        if step.spec.compensation is not None and step.compensation_input is not None:
            entry = await _compensate_one(
                run, step, step.spec.compensation, step.compensation_input, context
            )
            run.execution = run.execution.with_step(entry)


async def _compensate_one(
    run: Run,
    step: CompiledStep,
    compensation: Compensation,
    input_map: Value,
    context: Mapping[str, Any],
) -> StepRecord:
    spec = step.spec
    record = StepRecord(id=spec.id, kind="compensation", status="running", started_at=now())
    started = time.monotonic()
    try:
        request = build_request(
            compensation.method,
            compensation.endpoint,
            input_map.evaluate(context),
            run.execution.input,
            idempotency_key(run.execution.id, f"{spec.id}:compensation"),
        )
        record = replace(record, request=request.snapshot(), attempts=1)
        # Shielded from a cancel request: compensating is what cancelling means.
        response = await run.caller.call(compensation.service, request, spec.timeout_seconds)
    except (StepInputError, HttpCallError) as exc:
        run.log("error", f"compensation failed: {exc}", spec.id)
        return _settle(record, started, status="failed", error=str(exc))
    if 200 <= response.status < 300:
        run.log("info", f"compensated: HTTP {response.status}", spec.id)
        return _settle(
            record, started, status="completed", output=response.body, http=response.status
        )
    error = f"HTTP {response.status}"
    run.log("error", f"compensation failed: {error}", spec.id)
    return _settle(record, started, status="failed", error=error, http=response.status)
