"""Log routes over HTTP: filters, pages, downloads as text and JSON, and access."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from blobflow.api.logs import text_line
from blobflow.core.records import Execution, LogLine, StepRecord, log_document
from tests.api_support import ALICE, BOB, Api

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LINES = [
    LogLine(T0, "info", None, "execution started"),
    LogLine(T0 + timedelta(seconds=1), "info", "load", "started: POST studio/load"),
    LogLine(T0 + timedelta(seconds=2), "warning", "load", "retrying in 0.1 s"),
    LogLine(T0 + timedelta(seconds=3), "info", "load", "completed: HTTP 200"),
    LogLine(T0 + timedelta(seconds=4), "error", "save", "failed after 1 attempt(s)"),
    LogLine(T0 + timedelta(seconds=5), "error", None, "execution failed:\nstep 'save' failed"),
]


async def seed(api: Api) -> None:
    execution = Execution(
        id="run-1",
        event_id="evt-1",
        provider_id="p",
        workflow_id="wf",
        workflow_version=1,
        blob_id="b",
        user_id="alice",
        priority=0,
        input={},
        steps=(StepRecord("load"), StepRecord("save")),
        status="failed",
    )
    await api.service.store.park_many([execution])
    await api.service.store.executions.update_one(
        {"_id": "run-1"}, {"$set": {"logs": [log_document(line) for line in LINES]}}
    )


@pytest.mark.parametrize(
    ("params", "messages", "total"),
    [
        ({}, [line.message for line in LINES], 6),
        ({"level": "error"}, [LINES[4].message, LINES[5].message], 2),
        ({"step_id": "load"}, [line.message for line in LINES[1:4]], 3),
        ({"step_id": "load", "level": "info"}, [LINES[1].message, LINES[3].message], 2),
        ({"limit": "2", "offset": "1"}, [LINES[1].message, LINES[2].message], 6),
        ({"offset": "10"}, [], 6),
        ({"step_id": "nope"}, [], 0),
    ],
)
@pytest.mark.asyncio
async def test_logs_are_filtered_and_paged(
    api: Api, params: dict[str, str], messages: list[str], total: int
) -> None:
    await seed(api)
    reply = await api.get("/v1/executions/run-1/logs", params=params)
    assert reply.status == 200
    assert [line["message"] for line in reply.body["logs"]] == messages
    assert reply.body["total_logs"] == total
    assert reply.body["execution_id"] == "run-1"
    assert reply.body["workflow_id"] == "wf"


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "10001"}, {"level": "loud"}, {"offset": "x"}, {"step_id": ""}],
)
@pytest.mark.asyncio
async def test_bad_log_parameters_are_400(api: Api, params: dict[str, str]) -> None:
    await seed(api)
    reply = await api.get("/v1/executions/run-1/logs", params=params)
    assert reply.status == 400
    assert reply.body["error"]["message"].startswith(f"{next(iter(params))}: ")


@pytest.mark.asyncio
async def test_a_log_line_has_the_fields_of_the_contract(api: Api) -> None:
    await seed(api)
    reply = await api.get("/v1/executions/run-1/logs", params={"limit": "1", "offset": "1"})
    assert reply.body["logs"] == [
        {
            "timestamp": "2026-01-01T00:00:01.000Z",
            "level": "info",
            "step_id": "load",
            "message": "started: POST studio/load",
        }
    ]


@pytest.mark.asyncio
async def test_download_as_text_is_one_readable_line_per_entry(api: Api) -> None:
    await seed(api)
    reply = await api.get("/v1/executions/run-1/logs/download", params={"format": "text"})
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert reply.headers["Content-Disposition"] == (
        'attachment; filename="execution-run-1-logs.txt"'
    )
    lines = reply.text.splitlines()
    assert len(lines) == len(LINES)
    assert lines[1] == "2026-01-01T00:00:01.000Z INFO    [load] started: POST studio/load"
    assert lines[5].endswith("execution failed:\\nstep 'save' failed")
    default = await api.get("/v1/executions/run-1/logs/download")
    assert default.text == reply.text


@pytest.mark.asyncio
async def test_download_as_json_parses_and_holds_every_line(api: Api) -> None:
    await seed(api)
    reply = await api.get("/v1/executions/run-1/logs/download", params={"format": "json"})
    assert reply.status == 200
    assert reply.headers["Content-Disposition"].endswith('filename="execution-run-1-logs.json"')
    document = orjson.loads(reply.text)
    assert document["total_logs"] == len(LINES) == len(document["logs"])
    assert document["logs"][5]["message"] == LINES[5].message


@pytest.mark.asyncio
async def test_a_long_log_downloads_whole(api: Api) -> None:
    await seed(api)
    many = [log_document(LogLine(T0, "info", "s", f"line {n}")) for n in range(5000)]
    await api.service.store.executions.update_one({"_id": "run-1"}, {"$set": {"logs": many}})
    text = await api.get("/v1/executions/run-1/logs/download")
    assert len(text.text.splitlines()) == 5000
    as_json = await api.get("/v1/executions/run-1/logs/download", params={"format": "json"})
    assert [line["message"] for line in orjson.loads(as_json.text)["logs"]][-1] == "line 4999"


@pytest.mark.parametrize(("token", "status"), [(ALICE, 200), (BOB, 404)])
@pytest.mark.parametrize("path", ["/logs", "/logs/download"])
@pytest.mark.asyncio
async def test_logs_are_visible_to_their_user_only(
    api: Api, token: str, status: int, path: str
) -> None:
    await seed(api)
    reply = await api.get(f"/v1/executions/run-1{path}", token=token)
    assert reply.status == status
    missing = await api.get(f"/v1/executions/nope{path}")
    assert missing.status == 404


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (LogLine(T0, "debug", None, "x"), "2026-01-01T00:00:00.000Z DEBUG   x\n"),
        (LogLine(T0, "warning", "s", "a\r\nb"), "2026-01-01T00:00:00.000Z WARNING [s] a\\r\\nb\n"),
    ],
)
def test_text_line(line: LogLine, text: str) -> None:
    assert text_line(line) == text


@pytest.mark.asyncio
async def test_a_download_takes_the_same_filters(api: Api) -> None:
    await seed(api)
    params = {"level": "error", "format": "text"}
    reply = await api.get("/v1/executions/run-1/logs/download", params=params)
    assert len(reply.text.splitlines()) == 2
    params = {"step_id": "load", "format": "json"}
    reply = await api.get("/v1/executions/run-1/logs/download", params=params)
    assert orjson.loads(reply.text)["total_logs"] == 3
