"""The in-memory ports of tests/memory.py keep the promises of the real adapters."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from blobflow.core.deltas import DeltaDraft
from blobflow.core.records import Execution, LogLine, StepRecord, now
from blobflow.core.step_requests import StepRequest, build_request
from blobflow.errors import HttpCallError, LeaseLost, UnstorableError
from tests.memory import ManualClock, MemoryExecutionStore, MemoryPublisher, Reply, ScriptedCaller


def _execution(execution_id: str, *, blob_id: str = "blob-1", priority: int = 0) -> Execution:
    return Execution(
        id=execution_id,
        event_id=f"evt-{execution_id}",
        provider_id="p",
        workflow_id="wf",
        workflow_version=1,
        blob_id=blob_id,
        user_id="user-1",
        priority=priority,
        input={"tags": ["a", "b"]},
        steps=(StepRecord("a"),),
    )


def _stepped(execution: Execution, output: Any) -> Execution:
    step = replace(execution.step("a"), status="completed", completed_at=now(), output=output)
    return execution.with_step(step)


def _done(execution: Execution, output: Any) -> Execution:
    return replace(_stepped(execution, output), status="completed", completed_at=now())


def _line(message: str) -> LogLine:
    return LogLine(now(), "info", "a", message)


@pytest.mark.asyncio
async def test_leases_fence_out_the_previous_owner_once_another_claims() -> None:
    clock = ManualClock()
    store = MemoryExecutionStore(lease_ms=1_000, clock=clock)
    execution = _execution("x")
    [lease] = await store.create_many([execution], "w1")
    assert await store.create_many([execution], "w2") == []  # exists: skipped
    assert await store.claim("x", "w2") is None  # the lease is live
    assert await store.get_with_owner("x") == (execution, "w1")

    clock.advance(1.001)
    assert await store.get_with_owner("x") == (execution, None)
    claimed = await store.claim("x", "w2")
    assert claimed is not None
    taken, new_lease = claimed
    assert (taken.status, new_lease.epoch) == ("running", 2)
    with pytest.raises(LeaseLost):
        await store.checkpoint(lease, _stepped(taken, {"by": "w1"}), [_line("late")])
    with pytest.raises(LeaseLost):
        await store.renew(lease)
    await store.release([lease])  # fenced: does nothing
    assert store.owner_of("x") == ("w2", 2)
    assert await store.checkpoint(new_lease, _stepped(taken, {"by": "w2"}), [_line("ok")]) is False
    stored = await store.get("x")
    assert stored is not None
    assert stored.step("a").output == {"by": "w2"}
    assert [line.message for line in await store.logs("x")] == ["ok"]

    await store.release([new_lease])
    assert await store.get_with_owner("x") == (stored, None)
    assert await store.claim("x", "w3") is not None  # released: free at once


@pytest.mark.asyncio
async def test_a_cancel_request_is_reported_by_every_fenced_write_which_still_lands() -> None:
    store = MemoryExecutionStore()
    execution = _execution("x")
    [lease] = await store.create_many([execution], "w1")
    assert await store.request_cancel("x") is True
    assert await store.renew(lease) is True
    assert await store.checkpoint(lease, _done(execution, {}), [_line("done")]) is True
    stored = await store.get("x")
    assert stored is not None
    assert (stored.status, stored.cancel_requested) == ("completed", True)
    assert await store.request_cancel("x") is False  # finished
    assert await store.request_cancel("missing") is False


@pytest.mark.asyncio
async def test_claim_many_takes_free_executions_by_priority_then_age() -> None:
    store = MemoryExecutionStore(clock=ManualClock())
    low, high = _execution("low"), _execution("high", priority=5)
    later = replace(_execution("high2", priority=5), created_at=high.created_at + timedelta(1))
    assert await store.park_many([low, later, high]) == {"low", "high", "high2"}
    await store.create_many([_execution("held", priority=9)], "w0")

    first = await store.claim_many("w1", 2)
    assert [(e.id, lease.epoch) for e, lease in first.leased] == [("high", 1), ("high2", 1)]
    assert first.more is True
    assert [e.status for e, _ in first.leased] == ["pending", "pending"]  # the run sets it
    rest = await store.claim_many("w2", 5)
    assert [e.id for e, _ in rest.leased] == ["low"]
    assert rest.more is False
    assert (await store.claim_many("w2", 0)).leased == []


@pytest.mark.asyncio
async def test_records_round_trip_as_in_mongodb_and_unstorable_values_are_refused() -> None:
    store = MemoryExecutionStore()
    execution = replace(_execution("x"), input={"tags": ("a", "b")})
    [lease] = await store.create_many([execution], "w1")
    stored = await store.get("x")
    assert stored is not None
    assert stored.input == {"tags": ["a", "b"]}  # arrays come back as lists

    with pytest.raises(UnstorableError):
        await store.checkpoint(lease, _done(execution, {"n": 2**70}), [_line("huge")])
    assert await store.get("x") == stored  # untouched
    assert await store.logs("x") == []
    with pytest.raises(UnstorableError):
        await store.create_many(
            [_execution("big"), replace(_execution("y"), input={"n": 2**64})], "w"
        )
    assert await store.get("big") is None  # all or nothing


@pytest.mark.asyncio
async def test_deltas_are_stored_once_with_gapless_versions_per_blob() -> None:
    store = MemoryExecutionStore()
    first, second, other = _execution("x"), _execution("y"), _execution("z", blob_id="blob-2")
    drafts = [DeltaDraft("set", "/a", 1, None), DeltaDraft("set", "/b", 2, None)]

    stored = await store.store_deltas(first, drafts)
    assert [(d["_id"], d["version"]) for d in stored] == [("x:0", 1), ("x:1", 2)]
    assert await store.store_deltas(first, drafts) == stored  # a resumed run: found, kept
    assert [d["version"] for d in await store.store_deltas(second, drafts[:1])] == [3]
    assert [d["version"] for d in await store.store_deltas(other, drafts)] == [1, 2]
    assert await store.deltas_of("x") == stored
    with pytest.raises(UnstorableError):
        await store.store_deltas(_execution("w"), [DeltaDraft("set", "/n", 2**70, None)])
    assert await store.deltas_of("w") == []


@pytest.mark.asyncio
async def test_unpublished_lists_completed_executions_until_marked() -> None:
    store = MemoryExecutionStore()
    leases = await store.create_many([_execution("x"), _execution("y")], "w")
    await store.checkpoint(leases[0], _done(_execution("x"), {}))
    assert [e.id for e in await store.unpublished()] == ["x"]
    await store.mark_published("x")
    assert await store.unpublished() == []


def _request(method: str, path: str, body: Any = None) -> StepRequest:
    return build_request(method, path, body, {}, "key-1")


@pytest.mark.asyncio
async def test_scripted_caller_answers_in_order_and_records_what_was_sent() -> None:
    caller = ScriptedCaller()
    caller.script("GET", "/blobs/{blob_id}", [Reply(503), Reply(200, json={"any": True})])
    caller.script("GET", "/blobs/special", Reply(200, json={"special": True}))
    failing = HttpCallError("connect", "service 'studio': refused")
    caller.script("POST", "/down", Reply(error=failing))

    answers = [
        await caller.call("studio", _request("GET", "/blobs/{blob_id}", {"blob_id": "b 1"}), 1)
        for _ in range(3)
    ]
    assert [a.status for a in answers] == [503, 200, 200]  # the last reply repeats
    special = await caller.call("core", _request("GET", "/blobs/special"), 1)
    assert special.body == {"special": True}  # fewer placeholders win
    unscripted = await caller.call("studio", _request("POST", "/nowhere", {"n": 2**70}), 1)
    assert unscripted.status == 404
    with pytest.raises(HttpCallError) as caught:
        await caller.call("studio", _request("POST", "/down"), 1)
    assert (caught.value.reason, caught.value.retryable) == ("connect", True)

    first = caller.calls("GET", "/blobs/{blob_id}")[0]
    assert (first.path, first.path_params, first.service) == (
        "/blobs/b%201",
        {"blob_id": "b 1"},
        "studio",
    )
    assert first.headers["idempotency-key"] == "key-1"
    assert caller.calls(service="core")[0].route == "/blobs/special"
    assert caller.calls("POST", "/nowhere")[0].json == {"n": 2**70}
    assert answers[1].headers["content-type"] == "application/json"


@pytest.mark.asyncio
async def test_scripted_caller_fails_as_service_clients_do() -> None:
    from blobflow.downstream.http_caller import ServiceClients

    request = _request("POST", "/a")
    async with ServiceClients({"STUDIO": "http://127.0.0.1:9"}) as clients:
        with pytest.raises(HttpCallError) as real:
            await clients.call("billing", request, 1)
    with pytest.raises(HttpCallError) as scripted:
        await ScriptedCaller().call("billing", request, 1)
    assert (scripted.value.reason, str(scripted.value)) == (real.value.reason, str(real.value))
    assert scripted.value.retryable is real.value.retryable

    caller = ScriptedCaller()
    caller.script("POST", "/a", Reply(hang=True))
    with pytest.raises(HttpCallError) as timed_out:
        await caller.call("studio", request, 0.01)
    assert (timed_out.value.reason, str(timed_out.value)) == (
        "timeout",
        "service 'studio': no answer within 0.01 s",
    )
    assert caller.requests[0].outcome == "client_gone"


@pytest.mark.asyncio
async def test_memory_publisher_records_confirmed_events_only() -> None:
    publisher = MemoryPublisher()
    assert await publisher.publish([{"_id": "x:0"}]) is True
    publisher.confirm = False
    assert await publisher.publish([{"_id": "y:0"}]) is False
    assert publisher.published == [{"_id": "x:0"}]
