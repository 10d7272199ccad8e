"""Step behaviour: retries, failures, compensation, cancel; on in-memory ports, no server."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from typing import Any

import pytest

from blobflow.core.records import Execution, now
from blobflow.core.sources import SourceDocument
from blobflow.runtime.engine import new_execution
from tests.memory import (
    MemoryExecutionStore,
    Reply,
    ScriptedCaller,
    memory_engine,
    memory_store,
)
from tests.support import binding_of, blob_event, catalog_with, start, step

OK = Reply(200, json={"ok": True})
BIG = int("9" * 30)  # beyond BSON's 64-bit integers


def _undo(name: str) -> dict[str, Any]:
    return {
        "service": "studio",
        "endpoint": f"/undo/{name}",
        "input_map": {"run": "$.execution.id"},
    }


async def _run(
    caller: ScriptedCaller, steps: list[dict[str, Any]], **workflow: Any
) -> tuple[Execution, list[str], MemoryExecutionStore]:
    catalog = catalog_with(steps, **workflow)
    engine = memory_engine(catalog, caller=caller)
    execution = await start(engine, blob_event(), binding_of(catalog, "wf"))
    assert execution is not None
    store = memory_store(engine)
    assert await store.get(execution.id) == execution  # what it returns is what it stored
    logs = [
        f"{line.level} {line.step_id} {line.message}" for line in await store.logs(execution.id)
    ]
    return execution, logs, store


@pytest.mark.asyncio
async def test_503_503_200_takes_three_attempts_with_growing_delays() -> None:
    caller = ScriptedCaller()
    caller.script("POST", "/a", [Reply(503), Reply(503), OK])
    retry = {"max_attempts": 3, "backoff_ms": 2}
    execution, logs, _ = await _run(caller, [step("a", retry=retry)])

    assert execution.status == "completed"
    assert execution.step("a").attempts == 3
    calls = caller.calls("POST", "/a")
    assert len(calls) == 3
    assert len({c.headers["Idempotency-Key"] for c in calls}) == 1
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.002
    assert gaps[1] >= 0.004
    retries = [line for line in logs if "retrying in" in line]
    assert retries == [
        "warning a retrying in 0.002 s (attempt 2 of 3): HTTP 503: null",
        "warning a retrying in 0.004 s (attempt 3 of 3): HTTP 503: null",
    ]


@pytest.mark.asyncio
async def test_400_fails_at_once_and_stops_the_run() -> None:
    caller = ScriptedCaller()
    caller.script("POST", "/a", [Reply(400, json={"error": "bad blob"})])
    steps = [step("a", retry={"max_attempts": 5, "backoff_ms": 10}), step("b")]
    execution, _, _ = await _run(caller, steps)

    assert execution.status == "failed"
    assert execution.error == 'step \'a\' failed: HTTP 400: {"error":"bad blob"}'
    assert execution.step("a").attempts == 1
    assert execution.step("a").http_status == 400
    assert execution.step("b").status == "cancelled"
    assert caller.calls("POST", "/b") == []


@pytest.mark.asyncio
async def test_timeout_is_retried_then_fails() -> None:
    caller = ScriptedCaller()
    caller.script("POST", "/slow", [Reply(200, json={}, delay_s=2)])
    slow = step("slow", timeout_seconds=0.01, retry={"max_attempts": 2, "backoff_ms": 1})
    execution, _, _ = await _run(caller, [slow])

    assert execution.status == "failed"
    assert execution.step("slow").attempts == 2
    assert execution.step("slow").error == "service 'studio': no answer within 0.01 s"
    assert [c.outcome for c in caller.calls("POST", "/slow")] == ["client_gone"] * 2


@pytest.mark.asyncio
async def test_retry_after_is_honoured() -> None:
    # One second is the shortest wait a Retry-After header can ask for.
    caller = ScriptedCaller()
    caller.script("POST", "/a", [Reply(429, headers={"Retry-After": "1"}), OK])
    execution, logs, _ = await _run(
        caller, [step("a", retry={"max_attempts": 2, "backoff_ms": 10})]
    )

    assert execution.status == "completed"
    first, second = caller.calls("POST", "/a")
    assert second.received_at - first.received_at >= 1.0
    assert any("retrying in 1 s" in line for line in logs)


@pytest.mark.asyncio
async def test_on_failure_continue_records_the_failure_and_goes_on() -> None:
    caller = ScriptedCaller()
    caller.script("POST", "/a", [Reply(500)])
    caller.script("POST", "/b", [Reply(200, json={"seen": True})])
    steps = [
        step("a", on_failure="continue"),
        step("b", input_map={"status": "$.steps.a.status", "error": "$.steps.a.error"}),
    ]
    execution, _, _ = await _run(caller, steps)

    assert execution.status == "completed"
    assert execution.step("a").status == "failed"
    assert caller.calls("POST", "/b")[0].json == {"status": "failed", "error": "HTTP 500: null"}
    assert execution.output == {"seen": True}


@pytest.mark.asyncio
async def test_compensations_run_in_reverse_order_and_a_failing_one_does_not_stop_the_others() -> (
    None
):
    caller = ScriptedCaller()
    for name in ("a", "b", "c"):
        # Each step takes 2 ms, as over HTTP, so each completes at its own time.
        caller.script("POST", f"/{name}", [Reply(200, json={"ok": True}, delay_s=0.002)])
    caller.script("POST", "/d", [Reply(422)])
    caller.script("POST", "/undo/a", [OK])
    caller.script("POST", "/undo/b", [Reply(500)])
    caller.script("POST", "/undo/c", [OK])
    steps = [
        step("a", compensation=_undo("a")),
        step("b", compensation=_undo("b")),
        step("c", compensation=_undo("c")),
        step("d"),
    ]
    execution, _, _ = await _run(caller, steps)

    assert execution.status == "failed"
    undone = [r.path for r in caller.requests if r.path.startswith("/undo")]
    assert undone == ["/undo/c", "/undo/b", "/undo/a"]
    compensations = [(s.id, s.status) for s in execution.steps if s.kind == "compensation"]
    assert compensations == [("c", "completed"), ("b", "failed"), ("a", "completed")]
    request = caller.calls("POST", "/undo/a")[0]
    assert request.json == {"run": execution.id}
    assert request.headers["Idempotency-Key"] == f"{execution.id}:a:compensation"


@pytest.mark.asyncio
async def test_steps_completed_within_one_millisecond_are_compensated_in_reverse_order() -> None:
    caller = ScriptedCaller()
    caller.script("POST", "/d", [Reply(422)])
    caller.script("POST", "/undo/{name}", [OK])
    steps = [step(name, compensation=_undo(name)) for name in ("a", "b", "c")]
    catalog = catalog_with([*steps, step("d")])
    engine = memory_engine(catalog, caller=caller)
    binding = binding_of(catalog, "wf")
    execution = new_execution(blob_event(), binding, catalog.workflows["wf"])
    # Three fast steps, done within one millisecond, as a resumed run reads them back.
    moment = now()
    for name in ("a", "b", "c"):
        done = replace(execution.step(name), status="completed", completed_at=moment, output={})
        execution = execution.with_step(done)
    [lease] = await memory_store(engine).create_many([execution], engine.worker_id)
    finished = await engine.run_leased(execution, lease)

    assert finished is not None
    assert finished.status == "failed"
    undone = [r.path for r in caller.requests if r.path.startswith("/undo")]
    assert undone == ["/undo/c", "/undo/b", "/undo/a"]


@pytest.mark.asyncio
async def test_cancel_during_a_hanging_step_aborts_it_and_compensates() -> None:
    caller = ScriptedCaller()
    caller.script("POST", "/a", [OK])
    caller.script("POST", "/hang", [Reply(200, hang=True)])
    caller.script("POST", "/undo/a", [OK])
    catalog = catalog_with([step("a", compensation=_undo("a")), step("hang"), step("never")])
    engine = memory_engine(catalog, caller=caller)
    run = asyncio.ensure_future(start(engine, blob_event(), binding_of(catalog, "wf")))
    hanging = await caller.wait_for_calls("POST", "/hang", count=1, timeout_s=5)
    assert await engine.runs.cancel(next(iter(engine.runs)))
    execution = await asyncio.wait_for(run, timeout=5)

    assert execution is not None
    assert execution.status == "cancelled"
    assert execution.cancelled_at is not None
    assert execution.step("hang").status == "cancelled"
    assert execution.step("never").status == "cancelled"
    await hanging[0].finished()
    assert hanging[0].outcome == "client_gone"
    assert len(caller.calls("POST", "/undo/a")) == 1
    assert caller.calls("POST", "/never") == []
    assert await memory_store(engine).get(execution.id) == execution


@pytest.mark.asyncio
async def test_input_schema_violation_runs_no_step() -> None:
    schema = {
        "id": "needs_title",
        "provider_id": "p",
        "name": "Needs a title",
        "type": "input",
        "definition": {"type": "object", "required": ["title"]},
    }
    extra = [SourceDocument("schema", "s.yaml", schema)]
    caller = ScriptedCaller()
    execution, _, _ = await _run(caller, [step("a")], extra=extra, input_schema_id="needs_title")

    assert execution.status == "failed"
    assert (
        execution.error == 'input does not match its schema: (root): "title" is a required property'
    )
    assert caller.requests == []


@pytest.mark.asyncio
async def test_missing_path_parameter_fails_without_sending() -> None:
    caller = ScriptedCaller()
    execution, _, _ = await _run(caller, [step("a", "/items/{item_id}")])

    assert execution.status == "failed"
    assert "{item_id}" in (execution.step("a").error or "")
    assert caller.requests == []


@pytest.mark.asyncio
async def test_unknown_service_is_a_clear_failure() -> None:
    # The error is the one `ServiceClients` raises (test_memory checks they agree).
    execution, _, _ = await _run(ScriptedCaller(), [step("a", service="billing")])

    assert execution.status == "failed"
    assert "BLOBFLOW_SERVICE_BILLING_URL" in (execution.step("a").error or "")


@pytest.mark.asyncio
async def test_condition_false_skips_and_records_the_decision() -> None:
    caller = ScriptedCaller()
    caller.script("POST", "/a", [Reply(200, json={"score": 0.2})])
    steps = [step("a"), step("b", condition="$.steps.a.output.score > 0.5")]
    execution, logs, _ = await _run(caller, steps)

    assert execution.status == "completed"
    assert execution.step("b").status == "skipped"
    assert [(d.step_id, d.result) for d in execution.decisions] == [("b", False)]
    assert "info b skipped: condition '$.steps.a.output.score > 0.5' is false" in logs


@pytest.mark.asyncio
async def test_variables_and_output_map() -> None:
    caller = ScriptedCaller()
    caller.script("POST", "/login", [Reply(200, json={"token": "t-1", "junk": 1})])
    caller.script("POST", "/use", [OK])
    steps = [
        step("login", output_map={"token": "$.token"}, variables=["token"]),
        step("use", input_map={"auth": "$.vars.token"}),
    ]
    execution, _, _ = await _run(
        caller, steps, output_map={"token": "$.vars.token", "ok": "$.steps.use.output.ok"}
    )

    assert execution.step("login").output == {"token": "t-1"}
    assert caller.calls("POST", "/use")[0].json == {"auth": "t-1"}
    assert execution.output == {"token": "t-1", "ok": True}


@pytest.mark.asyncio
async def test_output_that_gives_bad_deltas_fails_the_run() -> None:
    caller = ScriptedCaller()
    caller.script("POST", "/a", [Reply(200, json={"delta_operations": [{"path": "/x"}]})])
    execution, _, store = await _run(caller, [step("a")])

    assert execution.status == "failed"
    assert "output.delta_operations[0]" in (execution.error or "")
    assert store.deltas == {}


@pytest.mark.asyncio
async def test_an_output_the_database_cannot_store_fails_the_step_clearly() -> None:
    caller = ScriptedCaller()
    caller.script("POST", "/a", [Reply(200, json={"n": BIG})])
    execution, logs, _ = await _run(caller, [step("a"), step("b")])

    assert execution.status == "failed"
    assert (execution.step("a").error or "").startswith("output cannot be stored:")
    assert execution.step("a").attempts == 1
    assert execution.step("a").output is None
    assert caller.calls("POST", "/b") == []
    assert any("output cannot be stored" in line for line in logs)


@pytest.mark.asyncio
async def test_a_workflow_output_the_database_cannot_store_is_dropped_not_retried() -> None:
    caller = ScriptedCaller()
    caller.script("POST", "/a", [Reply(200, json={"ok": True})])
    caller.script("POST", "/b", [Reply(200, json={"n": BIG})])
    steps = [step("a"), step("b", on_failure="continue")]
    execution, _, _ = await _run(caller, steps, output_map={"big": 2**70})

    assert execution.status == "completed"
    assert execution.output is None
    assert execution.step("b").status == "failed"
