"""Cancel over HTTP, wherever the execution is: running here, on another replica, queued,
pending with nobody on it, or held by a replica that is gone."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.records import Execution, StepRecord, now
from blobflow.core.subjects import cancel_subject
from blobflow.runtime.engine import new_execution
from tests.api_support import ADMIN, ALICE, BOB, Api, Servers
from tests.servers import Downstream, Reply
from tests.support import binding_of, blob_event, catalog_with, engine_for, eventually, step

Db = AsyncDatabase[dict[str, Any]]

OK = Reply(200, json={"ok": True})
HANGING: dict[str, Any] = {
    "id": "hanging",
    "provider_id": "cancel-tests",
    "name": "Second step never answers",
    "steps": [
        {
            "id": "first",
            "service": "studio",
            "endpoint": "/first",
            "compensation": {"service": "studio", "endpoint": "/undo/first"},
        },
        {"id": "hang", "service": "studio", "endpoint": "/hang", "timeout_seconds": 60},
        {"id": "never", "service": "studio", "endpoint": "/never"},
    ],
}
PROVIDER = {"provider": {"id": "cancel-tests", "name": "Cancel tests"}, "workflows": []}
RUN = {"input": {"blob_id": "blob-c", "user_id": "alice"}}


def script(downstream: Downstream) -> None:
    downstream.script("POST", "/first", [OK])
    downstream.script("POST", "/hang", [Reply(200, hang=True)])
    downstream.script("POST", "/undo/first", [OK])


async def register(api: Api) -> None:
    reply = await api.post("/v1/registry", json={"workflows": [HANGING], "providers": [PROVIDER]})
    assert reply.status == 200, reply.text


async def start_hanging(api: Api, downstream: Downstream, hangs: int = 1) -> str:
    reply = await api.post("/v1/workflows/hanging/execute", json=RUN)
    assert reply.status == 202, reply.text
    await downstream.wait_for_calls("POST", "/hang", count=hangs, timeout_s=10)
    return str(reply.body["execution_id"])


def assert_cancelled_after_first(record: dict[str, Any]) -> None:
    assert record["status"] == "cancelled"
    assert record["cancelled_at"] is not None
    steps = [(s["id"], s["kind"], s["status"]) for s in record["steps"]]
    assert steps == [
        ("first", "step", "completed"),
        ("hang", "step", "cancelled"),
        ("never", "step", "cancelled"),
        ("first", "compensation", "completed"),
    ]


@pytest.mark.asyncio
async def test_cancel_aborts_the_hanging_call_and_compensates(
    api: Api, downstream: Downstream
) -> None:
    script(downstream)
    await register(api)
    execution_id = await start_hanging(api, downstream)
    started = time.monotonic()
    reply = await api.post(f"/v1/executions/{execution_id}/cancel")
    elapsed_s = time.monotonic() - started
    assert reply.status == 200, reply.text
    assert_cancelled_after_first(reply.body)
    assert len(downstream.calls("POST", "/undo/first")) == 1
    assert downstream.calls("POST", "/never") == []
    assert elapsed_s < 5  # measured well under one second; the bound only catches a hang
    again = await api.post(f"/v1/executions/{execution_id}/cancel")
    assert again.status == 409
    assert again.body["error"] == {
        "code": "already_finished",
        "message": f"execution {execution_id!r} is cancelled",
    }


@pytest.mark.asyncio
async def test_cancel_reaches_the_replica_that_runs_it(
    api: Api,
    servers: Servers,
) -> None:
    script(servers.downstream)
    await register(api)
    async with servers.serve() as other:
        await other.service.reload()
        execution_id = await start_hanging(api, servers.downstream)
        assert execution_id in api.service.engine.runs
        reply = await other.post(f"/v1/executions/{execution_id}/cancel")
        assert reply.status == 200, reply.text
        assert_cancelled_after_first(reply.body)
        assert len(servers.downstream.calls("POST", "/undo/first")) == 1


@pytest.mark.asyncio
async def test_a_user_cancels_on_another_replica_with_their_own_token(
    api: Api, servers: Servers
) -> None:
    """The replica that takes the request passes the caller's token to the one that runs it,
    which checks it again: alice's own token may cancel alice's run (200, not 202)."""
    script(servers.downstream)
    await register(api)
    async with servers.serve() as other:
        await other.service.reload()
        execution_id = await start_hanging(api, servers.downstream)
        assert execution_id in api.service.engine.runs
        reply = await other.post(f"/v1/executions/{execution_id}/cancel", token=ALICE)
        assert reply.status == 200, reply.text
        assert_cancelled_after_first(reply.body)


async def ask(nc: NatsClient, api: Api, execution_id: str, token: str | None) -> bytes:
    """A cancel request as another replica sends it, with `token` in its Authorization."""
    headers = None if token is None else {"Authorization": f"Bearer {token}"}
    subject = cancel_subject(api.service.engine.worker_id)
    reply = await nc.request(subject, execution_id.encode(), timeout=10, headers=headers)
    return reply.data


@pytest.mark.asyncio
async def test_a_cancel_request_over_nats_needs_a_token_that_may_cancel_it(
    api: Api, downstream: Downstream, nats_client: NatsClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone who may publish on blobflow.cancel.<worker> is refused without alice's or an
    admin's token; the owner reads whose execution it is from the store, not the request."""
    caplog.set_level(logging.WARNING, "blobflow.runtime.cancellation")
    script(downstream)
    await register(api)
    execution_id = await start_hanging(api, downstream)
    for token in (None, "wrong-token", BOB):
        assert await ask(nats_client, api, execution_id, token) == b"not allowed", token
    assert await ask(nats_client, api, "no-such-execution", BOB) == b"not allowed"
    assert execution_id in api.service.engine.runs
    record = await api.service.store.get(execution_id)
    assert record is not None
    assert (record.status, record.cancel_requested) == ("running", False)
    assert f"refused to cancel {execution_id}: the request has no valid token" in caplog.text
    assert f"refused to cancel {execution_id} for user bob" in caplog.text
    assert BOB not in caplog.text

    assert await ask(nats_client, api, execution_id, ALICE) == b"cancelled"
    record = await api.service.store.get(execution_id)
    assert record is not None
    assert record.status == "cancelled"
    assert await ask(nats_client, api, execution_id, ADMIN) == b"not running here"


@pytest.mark.asyncio
async def test_without_tokens_a_cancel_request_needs_none(
    servers: Servers, nats_client: NatsClient
) -> None:
    script(servers.downstream)
    async with servers.serve(api_tokens="") as api:
        await register(api)
        execution_id = await start_hanging(api, servers.downstream)
        assert await ask(nats_client, api, execution_id, None) == b"cancelled"


@pytest.mark.asyncio
async def test_a_queued_execution_is_cancelled_before_it_starts(
    servers: Servers,
) -> None:
    script(servers.downstream)
    async with servers.serve(max_concurrency="1") as api:
        await register(api)
        running = await start_hanging(api, servers.downstream)
        queued = (await api.post("/v1/workflows/hanging/execute", json=RUN)).body["execution_id"]
        reply = await api.post(f"/v1/executions/{queued}/cancel")
        assert reply.status == 200, reply.text
        assert reply.body["status"] == "cancelled"
        assert reply.body["started_at"] is None
        assert {s["status"] for s in reply.body["steps"]} == {"cancelled"}
        assert len(servers.downstream.calls("POST", "/first")) == 1  # the running one's only
        assert (await api.post(f"/v1/executions/{running}/cancel")).status == 200


def pending(execution_id: str, user_id: str = "alice") -> Execution:
    return Execution(
        id=execution_id,
        event_id=f"evt-{execution_id}",
        provider_id="cancel-tests",
        workflow_id="hanging",
        workflow_version=1,
        blob_id="blob-c",
        user_id=user_id,
        priority=0,
        input={"blob_id": "blob-c"},
        steps=tuple(StepRecord(step["id"]) for step in HANGING["steps"]),
    )


@pytest.mark.asyncio
async def test_a_pending_execution_nobody_holds_is_cancelled_at_once(
    api: Api, downstream: Downstream
) -> None:
    await register(api)
    await api.service.store.park_many([pending("p-1")])
    reply = await api.post("/v1/executions/p-1/cancel", token=ALICE)
    assert reply.status == 200, reply.text
    assert reply.body["status"] == "cancelled"
    assert {s["status"] for s in reply.body["steps"]} == {"cancelled"}
    assert downstream.requests == []


@pytest.mark.asyncio
async def test_a_cancel_for_a_gone_owner_is_recorded_and_carried_out_on_takeover(
    api: Api, downstream: Downstream
) -> None:
    await register(api)
    store = api.service.store
    await store.park_many([pending("p-2")])
    expires_ms = int(now().timestamp() * 1000) + 1500
    lease = {"owner": "gone-worker", "epoch": 1, "expires_ms": expires_ms}
    await store.executions.update_one(
        {"_id": "p-2"}, {"$set": {"status": "running", "lease": lease}}
    )
    reply = await api.post("/v1/executions/p-2/cancel")
    assert reply.status == 202, reply.text
    assert reply.body["status"] == "running"
    assert reply.body["cancel_requested"] is True

    async def cancelled() -> bool:
        record = await store.get("p-2")
        return record is not None and record.status == "cancelled"

    await eventually(cancelled, timeout_s=15)
    assert downstream.requests == []


@pytest.mark.asyncio
async def test_another_users_execution_cannot_be_cancelled(api: Api) -> None:
    await api.service.store.park_many([pending("p-3", user_id="alice")])
    reply = await api.post("/v1/executions/p-3/cancel", token=BOB)
    assert reply.status == 404
    record = await api.service.store.get("p-3")
    assert record is not None
    assert (record.status, record.cancel_requested) == ("pending", False)
    assert (await api.post("/v1/executions/nope/cancel")).status == 404


@pytest.mark.asyncio
async def test_cancel_requested_is_honoured_by_whoever_runs_it_next(api: Api) -> None:
    await register(api)
    await api.service.store.park_many([pending("p-4")])
    assert await api.service.store.request_cancel("p-4")
    result = await api.service.engine.resume("p-4")
    assert result is not None
    assert result.status == "cancelled"


@pytest.mark.asyncio
async def test_a_recorded_cancel_stops_a_run_whose_owner_was_never_asked(
    api: Api, downstream: Downstream
) -> None:
    script(downstream)
    await register(api)
    execution_id = await start_hanging(api, downstream)
    # As if the request to the owner was lost: only the record says so.
    assert await api.service.store.request_cancel(execution_id)

    async def cancelled() -> bool:
        record = await api.service.store.get(execution_id)
        return record is not None and record.status == "cancelled"

    await eventually(cancelled, timeout_s=10)  # the heartbeat notices it (lease / 3)
    assert len(downstream.calls("POST", "/undo/first")) == 1
    assert downstream.calls("POST", "/never") == []


@pytest.mark.asyncio
async def test_a_cancel_after_every_step_settled_completes_and_publishes(
    mongo_db: Db, downstream: Downstream
) -> None:
    catalog = catalog_with([step("a")])
    async with engine_for(catalog, mongo_db, downstream) as engine:
        execution = replace(
            new_execution(blob_event(), binding_of(catalog, "wf"), catalog.workflows["wf"]),
            steps=(StepRecord("a", status="completed", output={"transformed_content": "x"}),),
            cancel_requested=True,
        )
        await engine.store.park_many([execution])
        result = await engine.resume(execution.id, cancelled=True)
        assert result is not None
        assert result.status == "completed"
        assert [d["version"] for d in await engine.store.deltas_of(execution.id)] == [1]
        assert [e.id for e in await engine.store.unpublished()] == [execution.id]
        assert downstream.requests == []
