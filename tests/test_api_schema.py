"""Property-based conformance: schemathesis calls every operation of `/openapi.json`
against the running service and fails on any 5xx, undocumented status, wrong content type
or body that breaks its documented schema."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from blobflow.api.app import openapi_document
from blobflow.core.deltas import DeltaDraft
from blobflow.core.records import Decision, Execution, LogLine, StepRecord, log_document
from tests.api_support import ADMIN, Api, Servers
from tests.servers import Downstream, MongoDeployment, NatsServer, unique_name

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
schema = schemathesis.openapi.from_dict(openapi_document())


class LiveService:
    """The service on its own event loop in a thread: schemathesis calls it with
    blocking requests, which would stall a service on the test's own loop."""

    def __init__(self, nats_server: NatsServer, mongodb: MongoDeployment) -> None:
        self.nats_server = nats_server
        self.mongodb = mongodb
        self.database = unique_name("t")
        self.prefix = unique_name("t")
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="live-service", daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        if not self._ready.wait(30) or self._failure is not None:
            raise RuntimeError(f"the service did not start: {self._failure!r}")
        return self.url

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self.mongodb.sync_client().drop_database(self.database)
        self.nats_server.delete_streams(self.prefix)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test thread, not lost in this one
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with (
            Downstream() as downstream,
            Servers(
                self.nats_server, self.mongodb, self.database, self.prefix, downstream
            ).serve() as api,
        ):
            await seed(api)
            self.url = api.url
            self._ready.set()
            await self._stop.wait()


SEEDED = "0b9e2f4c6d8a4e1f9a3c5e7b9d1f3a5c"  # the document's example execution id
MOMENT = datetime(2026, 1, 1, tzinfo=UTC)


async def seed(api: Api) -> None:
    """Records for the document's example ids, so answers carry every kind of field."""
    steps = (
        StepRecord(
            "validate_blob",
            status="completed",
            attempts=2,
            started_at=MOMENT,
            completed_at=MOMENT,
            duration_ms=12,
            request={"method": "POST", "path": "/blobs/validate", "body": "{}"},
            output={"valid": True},
            http_status=200,
        ),
        StepRecord("extract_metadata", status="failed", error="HTTP 500: boom", http_status=500),
        StepRecord("trigger_providers", status="skipped"),
        StepRecord("generate_deltas", status="cancelled"),
        StepRecord("validate_blob", kind="compensation", status="completed", output=[1, "x"]),
    )
    execution = Execution(
        id=SEEDED,
        event_id="evt-seeded",
        provider_id="memmie-studio",
        workflow_id="blob_processing_workflow",
        workflow_version=1,
        blob_id="blob-chapter-7",
        user_id="alice",
        priority=5,
        input={"blob_id": "blob-chapter-7", "user_id": "alice", "n": 1.5, "deep": {"a": [None]}},
        steps=steps,
        status="failed",
        output=None,
        error="step 'extract_metadata' failed",
        started_at=MOMENT,
        completed_at=MOMENT,
        decisions=(Decision("extract_metadata", "$.steps.validate_blob.output.valid", True),),
    )
    store = api.service.store
    await store.park_many([execution])
    lines = [
        LogLine(MOMENT, "info", None, "execution started"),
        LogLine(MOMENT, "warning", "validate_blob", "retrying"),
        LogLine(MOMENT, "error", "extract_metadata", "failed:\nHTTP 500"),
    ]
    logs = [log_document(line) for line in lines]
    await store.executions.update_one({"_id": SEEDED}, {"$set": {"logs": logs}})
    completed = replace(execution, status="completed", error=None, output={"ok": True})
    drafts = [
        DeltaDraft("set", "/metadata/a", 1, None),
        DeltaDraft("transform", "/content", "text", "old"),
        DeltaDraft("create_derived", "/derived", {"id": "d"}, None),
    ]
    await store.store_deltas(completed, drafts)


@pytest.fixture(scope="module")
def live_url(nats_server: NatsServer, mongodb: MongoDeployment) -> Iterator[str]:
    with LiveService(nats_server, mongodb) as url:
        yield url


@pytest.mark.timeout(180)
@schema.parametrize()
@hypothesis.settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_every_operation_conforms_to_the_document(
    case: schemathesis.Case[Any], live_url: str
) -> None:
    case.call_and_validate(
        base_url=live_url,
        headers={"Authorization": f"Bearer {ADMIN}"},
        checks=CHECKS,
        timeout=10,
    )


def test_the_served_document_is_the_one_tested(live_url: str) -> None:
    import requests

    served = requests.get(f"{live_url}/openapi.json", timeout=10).json()
    assert served == openapi_document()
