"""Execution routes over HTTP: listing, filters, bounds, records, access and manual runs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from blobflow.api import executions as executions_routes
from blobflow.core.records import Execution, StepRecord
from tests.api_support import ALICE, BOB, Api, Servers
from tests.servers import Downstream, Reply
from tests.support import eventually, script_studio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# (id, user, workflow, provider, blob, status), oldest first.
SEEDS = [
    ("e1", "alice", "wf-a", "p1", "b1", "completed"),
    ("e2", "alice", "wf-b", "p1", "b2", "failed"),
    ("e3", "bob", "wf-a", "p2", "b1", "completed"),
    ("e4", "alice", "wf-a", "p2", "b3", "pending"),
    ("e5", "bob", "wf-b", "p1", "b2", "cancelled"),
    ("e6", "alice", "wf-a", "p1", "b1", "completed"),
]


def seeded(
    index: int, execution_id: str, user: str, wf: str, provider: str, blob: str, status: Any
) -> Execution:
    return Execution(
        id=execution_id,
        event_id=f"evt-{execution_id}",
        provider_id=provider,
        workflow_id=wf,
        workflow_version=1,
        blob_id=blob,
        user_id=user,
        priority=0,
        input={"blob_id": blob},
        steps=(StepRecord("one", status="completed"), StepRecord("two")),
        status=status,
        created_at=T0 + timedelta(minutes=index),
    )


async def seed(api: Api) -> None:
    for index, row in enumerate(SEEDS):
        await api.service.store.park_many([seeded(index, *row)])


def ids(body: dict[str, Any]) -> list[str]:
    return [execution["id"] for execution in body["executions"]]


FILTERED = [
    ({}, ["e6", "e5", "e4", "e3", "e2", "e1"]),
    ({"workflow_id": "wf-a"}, ["e6", "e4", "e3", "e1"]),
    ({"status": "completed"}, ["e6", "e3", "e1"]),
    ({"user_id": "bob"}, ["e5", "e3"]),
    ({"provider_id": "p2"}, ["e4", "e3"]),
    ({"blob_id": "b1"}, ["e6", "e3", "e1"]),
    ({"workflow_id": "wf-a", "status": "completed", "blob_id": "b1"}, ["e6", "e3", "e1"]),
    ({"workflow_id": "nope"}, []),
]


@pytest.mark.asyncio
async def test_admin_lists_with_every_filter_newest_first(
    api: Api, subtests: pytest.Subtests
) -> None:
    await seed(api)
    for params, expected in FILTERED:
        with subtests.test(params=params):
            reply = await api.get("/v1/executions", params=params)
            assert reply.status == 200
            assert ids(reply.body) == expected
            assert reply.body["total"] == len(expected)
            assert (reply.body["limit"], reply.body["offset"]) == (50, 0)


@pytest.mark.asyncio
async def test_pages_do_not_overlap_and_total_counts_all(api: Api) -> None:
    await seed(api)
    pages = [
        (await api.get("/v1/executions", params={"limit": "4", "offset": str(o)})).body
        for o in (0, 4, 8)
    ]
    assert [ids(page) for page in pages] == [["e6", "e5", "e4", "e3"], ["e2", "e1"], []]
    assert {page["total"] for page in pages} == {6}


@pytest.mark.asyncio
async def test_a_listing_entry_is_a_summary(api: Api) -> None:
    await seed(api)
    entry = (await api.get("/v1/executions", params={"limit": "1"})).body["executions"][0]
    assert entry["id"] == "e6"
    assert entry["progress"] == {"completed": 1, "total": 2}
    assert entry["created_at"] == "2026-01-01T00:05:00.000Z"
    assert not {"steps", "input", "output", "logs", "lease", "_id"} & set(entry)


BAD_PARAMETERS = [
    ({"limit": "0"}, "limit"),
    ({"limit": "101"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"limit": "1.5"}, "limit"),
    ({"limit": "+5"}, "limit"),
    ({"limit": ""}, "limit"),
    ({"offset": "-1"}, "offset"),
    ({"offset": "99999999999999999999"}, "offset"),
    ({"status": "done"}, "status"),
    ({"workflow_id": ""}, "workflow_id"),
]


@pytest.mark.asyncio
async def test_bad_parameters_are_400_naming_the_parameter(
    api: Api, subtests: pytest.Subtests
) -> None:
    for params, parameter in BAD_PARAMETERS:
        with subtests.test(params=params):
            reply = await api.get("/v1/executions", params=params)
            assert reply.status == 400
            assert reply.body["error"]["code"] == "invalid_parameter"
            assert reply.body["error"]["message"].startswith(f"{parameter}: ")


@pytest.mark.asyncio
async def test_a_repeated_parameter_is_400(api: Api) -> None:
    reply = await api.get("/v1/executions?limit=1&limit=2")
    assert reply.status == 400
    assert reply.body["error"]["message"] == "limit: given more than once"


@pytest.mark.parametrize(
    ("token", "params", "expected"),
    [
        (ALICE, {}, ["e6", "e4", "e2", "e1"]),
        (ALICE, {"user_id": "alice"}, ["e6", "e4", "e2", "e1"]),
        (ALICE, {"user_id": "bob"}, []),
        (ALICE, {"blob_id": "b1"}, ["e6", "e1"]),
        (BOB, {}, ["e5", "e3"]),
    ],
)
@pytest.mark.asyncio
async def test_users_list_only_their_own(
    api: Api, token: str, params: dict[str, str], expected: list[str]
) -> None:
    await seed(api)
    reply = await api.get("/v1/executions", token=token, params=params)
    assert reply.status == 200
    assert (ids(reply.body), reply.body["total"]) == (expected, len(expected))


@pytest.mark.parametrize(
    ("token", "execution_id", "status"),
    [
        (ALICE, "e1", 200),
        (ALICE, "e3", 404),  # bob's: not found, so existence does not leak
        (BOB, "e3", 200),
        (ALICE, "missing", 404),
    ],
)
@pytest.mark.asyncio
async def test_a_record_is_visible_to_its_user_and_admin(
    api: Api, token: str, execution_id: str, status: int
) -> None:
    await seed(api)
    reply = await api.get(f"/v1/executions/{execution_id}", token=token)
    assert reply.status == status
    admin = await api.get(f"/v1/executions/{execution_id}")
    assert admin.status == (404 if execution_id == "missing" else 200)
    if status == 404:
        assert reply.body == {
            "error": {"code": "not_found", "message": f"execution {execution_id!r} not found"}
        }


@pytest.mark.asyncio
async def test_the_record_holds_every_field_of_the_contract(api: Api) -> None:
    await seed(api)
    record = (await api.get("/v1/executions/e1")).body
    assert set(record) >= {
        "id", "event_id", "provider_id", "workflow_id", "workflow_version", "blob_id",
        "user_id", "priority", "status", "input", "output", "error", "progress",
        "created_at", "started_at", "completed_at", "cancelled_at", "steps", "decisions",
    }  # fmt: skip
    assert set(record["steps"][0]) >= {
        "id", "status", "attempts", "started_at", "completed_at", "duration_ms", "request",
        "output", "http_status", "error",
    }  # fmt: skip


@pytest.mark.asyncio
async def test_a_manual_run_goes_through_the_queue_and_completes(
    api: Api, downstream: Downstream
) -> None:
    script_studio(downstream)
    body = {"input": {"blob_id": "blob-m", "user_id": "alice", "content": "Text."}}
    reply = await api.post("/v1/workflows/blob_processing_workflow/execute", json=body)
    assert reply.status == 202
    execution_id = reply.body["execution_id"]
    assert reply.body["status"] == "pending"
    assert reply.headers["Location"] == f"/v1/executions/{execution_id}"

    async def finished() -> bool:
        record = (await api.get(f"/v1/executions/{execution_id}")).body
        return record["status"] in ("completed", "failed", "cancelled")

    await eventually(finished)
    record = (await api.get(f"/v1/executions/{execution_id}")).body
    assert record["status"] == "completed", record
    assert record["provider_id"] == "memmie-studio"
    assert record["event_id"] == f"manual:{execution_id}"
    history = await api.get("/v1/blobs/blob-m/deltas")
    assert history.status == 200
    assert [d["version"] for d in history.body["deltas"]] == list(
        range(1, history.body["total"] + 1)
    )


@pytest.mark.asyncio
async def test_a_user_runs_as_itself(api: Api, downstream: Downstream) -> None:
    script_studio(downstream)
    path = "/v1/workflows/blob_processing_workflow/execute"
    mine = await api.post(path, token=ALICE, json={"input": {"blob_id": "b", "user_id": "alice"}})
    assert mine.status == 202
    record = await api.get(f"/v1/executions/{mine.body['execution_id']}", token=ALICE)
    assert record.body["user_id"] == "alice"
    theirs = await api.post(path, token=ALICE, json={"input": {"blob_id": "b", "user_id": "bob"}})
    assert theirs.status == 400
    assert theirs.body["error"]["message"] == "input.user_id: must be your own user id"


BAD_RUNS: list[tuple[str | None, dict[str, Any], int, str, str | None]] = [
    (
        "/v1/workflows/nope/execute",
        {"json": {"input": {}}},
        404,
        "not_found",
        "workflow 'nope' not found",
    ),
    (
        None,
        {"data": b"{}", "headers": {"Content-Type": "text/plain"}},
        415,
        "unsupported_media_type",
        None,
    ),
    (
        None,
        {"data": b"{nope", "headers": {"Content-Type": "application/json"}},
        400,
        "invalid_json",
        None,
    ),
    (None, {"json": []}, 400, "invalid_body", "the body must be a JSON object"),
    (None, {"json": {}}, 400, "invalid_parameter", "input: required, a JSON object"),
    (
        None,
        {"json": {"input": {"blob_id": "b"}, "priority": 3}},
        400,
        "invalid_parameter",
        None,
    ),
    (None, {"json": {"input": {"user_id": "u"}}}, 400, "invalid_parameter", None),
    (
        None,
        {"json": {"input": {"blob_id": "b", "user_id": "u"}, "provider_id": "ghost"}},
        400,
        "invalid_parameter",
        "provider_id: unknown provider 'ghost'",
    ),
    (
        None,
        {"json": {"input": {"blob_id": "b", "user_id": "u"}, "provider_id": "book-writer"}},
        400,
        "invalid_parameter",
        None,
    ),
    (None, {"json": {"input": {"blob_id": "b", "user_id": 7}}}, 400, "invalid_parameter", None),
]


@pytest.mark.asyncio
async def test_a_bad_manual_run_is_refused_clearly(api: Api, subtests: pytest.Subtests) -> None:
    for path, kwargs, status, code, message in BAD_RUNS:
        with subtests.test(path=path, kwargs=kwargs):
            url = path or "/v1/workflows/blob_processing_workflow/execute"
            reply = await api.post(url, **kwargs)
            assert reply.status == status, reply.text
            assert reply.body["error"]["code"] == code
            if message is not None:
                assert reply.body["error"]["message"] == message
    assert (await api.get("/v1/executions")).body["total"] == 0


@pytest.mark.asyncio
async def test_input_failing_the_schema_is_400_with_each_violation(api: Api) -> None:
    body = {"input": {"blob_id": "b", "user_id": "u", "provider_ids": "all"}}
    reply = await api.post("/v1/workflows/blob_processing_workflow/execute", json=body)
    assert reply.status == 400
    assert reply.body["error"]["code"] == "invalid_input"
    assert reply.body["error"]["details"] == ['provider_ids: "all" is not of type "array"']
    listed = await api.get("/v1/executions")
    assert listed.body["total"] == 0


@pytest.mark.asyncio
async def test_a_manual_run_names_its_user_in_the_input(api: Api, downstream: Downstream) -> None:
    script_studio(downstream)
    path = "/v1/workflows/blob_processing_workflow/execute"
    reply = await api.post(path, token=ALICE, json={"input": {"blob_id": "b"}})
    assert reply.status == 202, reply.text
    record = await api.get(f"/v1/executions/{reply.body['execution_id']}", token=ALICE)
    assert record.body["input"] == {"blob_id": "b", "user_id": "alice"}


@pytest.mark.asyncio
async def test_a_user_cannot_run_a_workflow_on_another_users_blob(api: Api) -> None:
    await seed(api)  # b2 has executions of alice and of bob
    path = "/v1/workflows/blob_processing_workflow/execute"
    mine = await api.post(path, token=ALICE, json={"input": {"blob_id": "b3"}})
    assert mine.status == 202  # b3 is alice's alone
    theirs = await api.post(path, token=BOB, json={"input": {"blob_id": "b3"}})
    assert theirs.status == 404
    assert theirs.body["error"]["message"] == "blob 'b3' not found"
    admin = await api.post(path, json={"input": {"blob_id": "b3", "user_id": "bob"}})
    assert admin.status == 202


@pytest.mark.asyncio
async def test_a_stopping_replica_takes_no_manual_run_and_says_it_is_not_ready(api: Api) -> None:
    api.service.dispatcher.close()
    reply = await api.post(
        "/v1/workflows/blob_processing_workflow/execute", json={"input": {"blob_id": "b"}}
    )
    assert reply.status == 503
    assert reply.headers["Retry-After"] == "1"
    ready = await api.get("/readyz", token=None)
    assert ready.status == 503
    assert ready.body["checks"]["accepting_work"] is False
    assert (await api.get("/v1/executions")).body["total"] == 0


@pytest.mark.asyncio
async def test_the_same_idempotency_key_from_the_same_user_gives_the_same_execution(
    api: Api, downstream: Downstream
) -> None:
    script_studio(downstream)
    path = "/v1/workflows/blob_processing_workflow/execute"

    def run(blob_id: str) -> dict[str, Any]:
        return {"input": {"blob_id": blob_id, "user_id": "alice"}}

    key = {"Idempotency-Key": "order-17"}
    first = await api.post(path, token=ALICE, json=run("b-i"), headers=key)
    assert first.status == 202, first.text
    again = await api.post(path, token=ALICE, json=run("b-i"), headers=key)
    assert again.status == 200, again.text
    assert again.body["execution_id"] == first.body["execution_id"]
    assert again.headers["Location"] == f"/v1/executions/{first.body['execution_id']}"
    # Another user's key is another key; and two sends at once still make one run.
    bobs = await api.post(path, token=BOB, json={"input": {"blob_id": "b-j"}}, headers=key)
    assert bobs.status == 202
    assert bobs.body["execution_id"] != first.body["execution_id"]
    at_once = await asyncio.gather(
        *(
            api.post(path, token=ALICE, json=run("b-k"), headers={"Idempotency-Key": "x"})
            for _ in range(4)
        )
    )
    # Sent at once they may all be first (202), but they are one execution.
    assert {reply.status for reply in at_once} <= {200, 202}
    assert len({reply.body["execution_id"] for reply in at_once}) == 1
    executions = await api.get("/v1/executions?blob_id=b-k", token=ALICE)
    assert executions.body["total"] == 1
    too_long = await api.post(
        path, token=ALICE, json=run("b-l"), headers={"Idempotency-Key": "k" * 201}
    )
    assert too_long.status == 400


@pytest.mark.asyncio
async def test_two_users_racing_for_a_new_blob_id_never_both_get_it(api: Api) -> None:
    path = "/v1/workflows/blob_processing_workflow/execute"
    for round_number in range(5):
        blob = {"input": {"blob_id": f"new-blob-{round_number}"}}
        replies = await asyncio.gather(
            api.post(path, token=ALICE, json=blob), api.post(path, token=BOB, json=blob)
        )
        assert sorted(reply.status for reply in replies) == [202, 404], replies


@pytest.mark.asyncio
async def test_a_user_has_a_bound_on_runs_waiting_to_start(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executions_routes, "MAX_PENDING_MANUAL_RUNS", 2)
    # The first run's first step takes 2 s: the runs after it wait to start.
    servers.downstream.script("POST", "/blobs/validate", [Reply(200, json={}, delay_s=2)])
    path = "/v1/workflows/blob_processing_workflow/execute"
    async with servers.serve(max_concurrency="1") as api:
        statuses = [
            (await api.post(path, token=ALICE, json={"input": {"blob_id": "mine"}})).status
            for _ in range(5)
        ]
        refused = await api.post(path, token=ALICE, json={"input": {"blob_id": "mine"}})
    accepted = statuses.count(202)
    assert accepted in (2, 3), statuses  # the first may have started already
    assert statuses == [202] * accepted + [429] * (5 - accepted)
    assert refused.status == 429
    assert refused.body["error"]["code"] == "too_many_pending_runs"
    assert refused.headers["Retry-After"] == "10"
