"""Step behaviour against a real downstream server: retries, failures, compensation, cancel."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.records import Execution
from blobflow.core.sources import SourceDocument
from tests.servers import Downstream, Reply
from tests.support import binding_of, blob_event, catalog_with, engine_for, start, step, store_of

Db = AsyncDatabase[dict[str, Any]]
OK = Reply(200, json={"ok": True})


def _undo(name: str) -> dict[str, Any]:
    return {
        "service": "studio",
        "endpoint": f"/undo/{name}",
        "input_map": {"run": "$.execution.id"},
    }


async def _run(
    db: Db, downstream: Downstream, steps: list[dict[str, Any]], **workflow: Any
) -> tuple[Execution, list[str]]:
    catalog = catalog_with(steps, **workflow)
    async with engine_for(catalog, db, downstream) as engine:
        execution = await start(engine, blob_event(), binding_of(catalog, "wf"))
        assert execution is not None
        logs = [
            f"{line.level} {line.step_id} {line.message}"
            for line in await store_of(engine).logs(execution.id)
        ]
    return execution, logs


@pytest.mark.asyncio
async def test_503_503_200_takes_three_attempts_with_growing_delays(
    mongo_db: Db, downstream: Downstream
) -> None:
    downstream.script("POST", "/a", [Reply(503), Reply(503), OK])
    retry = {"max_attempts": 3, "backoff_ms": 50}
    execution, logs = await _run(mongo_db, downstream, [step("a", retry=retry)])

    assert execution.status == "completed"
    assert execution.step("a").attempts == 3
    calls = downstream.calls("POST", "/a")
    assert len(calls) == 3
    assert len({c.headers["Idempotency-Key"] for c in calls}) == 1
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.05
    assert gaps[1] >= 0.1
    retries = [line for line in logs if "retrying in" in line]
    assert retries == [
        "warning a retrying in 0.05 s (attempt 2 of 3): HTTP 503: null",
        "warning a retrying in 0.1 s (attempt 3 of 3): HTTP 503: null",
    ]


@pytest.mark.asyncio
async def test_400_fails_at_once_and_stops_the_run(mongo_db: Db, downstream: Downstream) -> None:
    downstream.script("POST", "/a", [Reply(400, json={"error": "bad blob"})])
    steps = [step("a", retry={"max_attempts": 5, "backoff_ms": 10}), step("b")]
    execution, _ = await _run(mongo_db, downstream, steps)

    assert execution.status == "failed"
    assert execution.error == 'step \'a\' failed: HTTP 400: {"error":"bad blob"}'
    assert execution.step("a").attempts == 1
    assert execution.step("a").http_status == 400
    assert execution.step("b").status == "cancelled"
    assert downstream.calls("POST", "/b") == []


@pytest.mark.asyncio
async def test_timeout_is_retried_then_fails(mongo_db: Db, downstream: Downstream) -> None:
    downstream.script("POST", "/slow", [Reply(200, json={}, delay_s=2)])
    slow = step("slow", timeout_seconds=0.2, retry={"max_attempts": 2, "backoff_ms": 10})
    execution, _ = await _run(mongo_db, downstream, [slow])

    assert execution.status == "failed"
    assert execution.step("slow").attempts == 2
    assert execution.step("slow").error == "service 'studio': no answer within 0.2 s"


@pytest.mark.asyncio
async def test_retry_after_is_honoured(mongo_db: Db, downstream: Downstream) -> None:
    downstream.script("POST", "/a", [Reply(429, headers={"Retry-After": "1"}), OK])
    execution, logs = await _run(
        mongo_db, downstream, [step("a", retry={"max_attempts": 2, "backoff_ms": 10})]
    )

    assert execution.status == "completed"
    first, second = downstream.calls("POST", "/a")
    assert second.received_at - first.received_at >= 1.0
    assert any("retrying in 1 s" in line for line in logs)


@pytest.mark.asyncio
async def test_on_failure_continue_records_the_failure_and_goes_on(
    mongo_db: Db, downstream: Downstream
) -> None:
    downstream.script("POST", "/a", [Reply(500)])
    downstream.script("POST", "/b", [Reply(200, json={"seen": True})])
    steps = [
        step("a", on_failure="continue"),
        step("b", input_map={"status": "$.steps.a.status", "error": "$.steps.a.error"}),
    ]
    execution, _ = await _run(mongo_db, downstream, steps)

    assert execution.status == "completed"
    assert execution.step("a").status == "failed"
    assert downstream.calls("POST", "/b")[0].json == {"status": "failed", "error": "HTTP 500: null"}
    assert execution.output == {"seen": True}


@pytest.mark.asyncio
async def test_compensations_run_in_reverse_order_and_a_failing_one_does_not_stop_the_others(
    mongo_db: Db, downstream: Downstream
) -> None:
    for name in ("a", "b", "c"):
        downstream.script("POST", f"/{name}", [OK])
    downstream.script("POST", "/d", [Reply(422)])
    downstream.script("POST", "/undo/a", [OK])
    downstream.script("POST", "/undo/b", [Reply(500)])
    downstream.script("POST", "/undo/c", [OK])
    steps = [
        step("a", compensation=_undo("a")),
        step("b", compensation=_undo("b")),
        step("c", compensation=_undo("c")),
        step("d"),
    ]
    execution, _ = await _run(mongo_db, downstream, steps)

    assert execution.status == "failed"
    undone = [r.path for r in downstream.requests if r.path.startswith("/undo")]
    assert undone == ["/undo/c", "/undo/b", "/undo/a"]
    compensations = [(s.id, s.status) for s in execution.steps if s.kind == "compensation"]
    assert compensations == [("c", "completed"), ("b", "failed"), ("a", "completed")]
    request = downstream.calls("POST", "/undo/a")[0]
    assert request.json == {"run": execution.id}
    assert request.headers["Idempotency-Key"] == f"{execution.id}:a:compensation"


@pytest.mark.asyncio
async def test_cancel_during_a_hanging_step_aborts_it_and_compensates(
    mongo_db: Db, downstream: Downstream
) -> None:
    downstream.script("POST", "/a", [OK])
    downstream.script("POST", "/hang", [Reply(200, hang=True)])
    downstream.script("POST", "/undo/a", [OK])
    catalog = catalog_with([step("a", compensation=_undo("a")), step("hang"), step("never")])
    async with engine_for(catalog, mongo_db, downstream) as engine:
        run = asyncio.ensure_future(start(engine, blob_event(), binding_of(catalog, "wf")))
        hanging = await downstream.wait_for_calls("POST", "/hang", count=1, timeout_s=5)
        assert await engine.runs.cancel(next(iter(engine.runs)))
        execution = await asyncio.wait_for(run, timeout=5)

    assert execution is not None
    assert execution.status == "cancelled"
    assert execution.cancelled_at is not None
    assert execution.step("hang").status == "cancelled"
    assert execution.step("never").status == "cancelled"
    await hanging[0].finished()
    assert hanging[0].outcome == "client_gone"
    assert len(downstream.calls("POST", "/undo/a")) == 1
    assert downstream.calls("POST", "/never") == []


@pytest.mark.asyncio
async def test_input_schema_violation_runs_no_step(mongo_db: Db, downstream: Downstream) -> None:
    schema = {
        "id": "needs_title",
        "provider_id": "p",
        "name": "Needs a title",
        "type": "input",
        "definition": {"type": "object", "required": ["title"]},
    }
    extra = [SourceDocument("schema", "s.yaml", schema)]
    catalog = catalog_with([step("a")], extra=extra, input_schema_id="needs_title")
    async with engine_for(catalog, mongo_db, downstream) as engine:
        execution = await start(engine, blob_event(), binding_of(catalog, "wf"))

    assert execution is not None
    assert execution.status == "failed"
    assert (
        execution.error == 'input does not match its schema: (root): "title" is a required property'
    )
    assert downstream.requests == []


@pytest.mark.asyncio
async def test_missing_path_parameter_fails_without_sending(
    mongo_db: Db, downstream: Downstream
) -> None:
    execution, _ = await _run(mongo_db, downstream, [step("a", "/items/{item_id}")])

    assert execution.status == "failed"
    assert "{item_id}" in (execution.step("a").error or "")
    assert downstream.requests == []


@pytest.mark.asyncio
async def test_unknown_service_is_a_clear_failure(mongo_db: Db, downstream: Downstream) -> None:
    execution, _ = await _run(mongo_db, downstream, [step("a", service="billing")])

    assert execution.status == "failed"
    assert "BLOBFLOW_SERVICE_BILLING_URL" in (execution.step("a").error or "")


@pytest.mark.asyncio
async def test_condition_false_skips_and_records_the_decision(
    mongo_db: Db, downstream: Downstream
) -> None:
    downstream.script("POST", "/a", [Reply(200, json={"score": 0.2})])
    steps = [step("a"), step("b", condition="$.steps.a.output.score > 0.5")]
    execution, logs = await _run(mongo_db, downstream, steps)

    assert execution.status == "completed"
    assert execution.step("b").status == "skipped"
    assert [(d.step_id, d.result) for d in execution.decisions] == [("b", False)]
    assert "info b skipped: condition '$.steps.a.output.score > 0.5' is false" in logs


@pytest.mark.asyncio
async def test_variables_and_output_map(mongo_db: Db, downstream: Downstream) -> None:
    downstream.script("POST", "/login", [Reply(200, json={"token": "t-1", "junk": 1})])
    downstream.script("POST", "/use", [OK])
    steps = [
        step("login", output_map={"token": "$.token"}, variables=["token"]),
        step("use", input_map={"auth": "$.vars.token"}),
    ]
    execution, _ = await _run(
        mongo_db,
        downstream,
        steps,
        output_map={"token": "$.vars.token", "ok": "$.steps.use.output.ok"},
    )

    assert execution.step("login").output == {"token": "t-1"}
    assert downstream.calls("POST", "/use")[0].json == {"auth": "t-1"}
    assert execution.output == {"token": "t-1", "ok": True}


@pytest.mark.asyncio
async def test_output_that_gives_bad_deltas_fails_the_run(
    mongo_db: Db, downstream: Downstream
) -> None:
    downstream.script("POST", "/a", [Reply(200, json={"delta_operations": [{"path": "/x"}]})])
    execution, _ = await _run(mongo_db, downstream, [step("a")])

    assert execution.status == "failed"
    assert "output.delta_operations[0]" in (execution.error or "")
    assert await mongo_db["deltas"].count_documents({}) == 0


@pytest.mark.asyncio
async def test_an_output_the_database_cannot_store_fails_the_step_clearly(
    mongo_db: Db, downstream: Downstream
) -> None:
    huge = b'{"n": ' + b"9" * 30 + b"}"
    downstream.script(
        "POST", "/a", [Reply(200, body=huge, headers={"Content-Type": "application/json"})]
    )
    execution, logs = await _run(mongo_db, downstream, [step("a"), step("b")])

    assert execution.status == "failed"
    assert (execution.step("a").error or "").startswith("output cannot be stored:")
    assert execution.step("a").output is None
    assert downstream.calls("POST", "/b") == []
    assert any("output cannot be stored" in line for line in logs)


@pytest.mark.asyncio
async def test_a_workflow_output_the_database_cannot_store_is_dropped_not_retried(
    mongo_db: Db, downstream: Downstream
) -> None:
    huge = b'{"n": ' + b"9" * 30 + b"}"
    downstream.script("POST", "/a", [Reply(200, json={"ok": True})])
    downstream.script(
        "POST", "/b", [Reply(200, body=huge, headers={"Content-Type": "application/json"})]
    )
    steps = [step("a"), step("b", on_failure="continue")]
    execution, _ = await _run(mongo_db, downstream, steps, output_map={"big": 2**70})

    assert execution.status == "completed"
    assert execution.output is None
    assert execution.step("b").status == "failed"
