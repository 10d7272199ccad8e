"""`/metrics` counts what the service did, read back with Prometheus's own parser."""

from __future__ import annotations

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from blobflow.core.records import StepRecord
from blobflow.metrics import Metrics
from tests.api_support import Api
from tests.servers import Downstream
from tests.support import eventually, script_studio

CHAPTER = {
    "event_id": "evt-metrics",
    "blob_id": "blob-m",
    "user_id": "user-1",
    "metadata": {"type": "chapter"},
    "content": "It rained.",
}
FINISHED = "blobflow_executions_finished_total"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_step_records_its_duration_and_retries() -> None:
    metrics = Metrics()
    metrics.step_finished("wf", StepRecord("s", status="completed", attempts=3, duration_ms=250))
    metrics.downstream_response("studio", 503)
    metrics.downstream_response("studio", None)
    found = samples(metrics.exposition()[0].decode())
    assert found[("blobflow_step_retries_total", (("step_id", "s"), ("workflow_id", "wf")))] == 2
    labels = (("le", "0.25"), ("step_id", "s"), ("workflow_id", "wf"))
    assert found[("blobflow_step_duration_seconds_bucket", labels)] == 1
    assert (
        found[
            (
                "blobflow_downstream_responses_total",
                (("service", "studio"), ("status_class", "5xx")),
            )
        ]
        == 1
    )
    assert (
        found[
            (
                "blobflow_downstream_responses_total",
                (("service", "studio"), ("status_class", "error")),
            )
        ]
        == 1
    )


@pytest.mark.asyncio
async def test_metrics_count_events_executions_steps_calls_and_deltas(
    api: Api, downstream: Downstream
) -> None:
    script_studio(downstream)
    js = api.service.nc.jetstream()
    await js.publish(api.names.created_subject, orjson.dumps(CHAPTER))
    await js.publish(api.names.created_subject, b"not json")

    async def done() -> bool:
        # Finished is counted after the final write, which follows the publishing.
        found = samples((await api.get("/metrics", token=None)).text)
        finished = sum(v for (name, _), v in found.items() if name == FINISHED)
        return found.get(("blobflow_deltas_published_total", ()), 0) >= 6 and finished >= 2

    await eventually(done)
    reply = await api.get("/metrics", token=None)
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = samples(reply.text)
    assert found[("blobflow_events_received_total", ())] == 2
    assert found[("blobflow_events_rejected_total", (("reason", "invalid_json"),))] == 1
    for workflow in ("blob_processing_workflow", "book_chapter_expansion"):
        started = found[("blobflow_executions_started_total", (("workflow_id", workflow),))]
        assert started == 1
        finished = (("status", "completed"), ("workflow_id", workflow))
        assert found[(FINISHED, finished)] == 1
    assert found[("blobflow_deltas_stored_total", ())] == 6
    responses = found[
        ("blobflow_downstream_responses_total", (("service", "studio"), ("status_class", "2xx")))
    ]
    assert responses >= 4
    step = (("step_id", "validate_blob"), ("workflow_id", "blob_processing_workflow"))
    assert found[("blobflow_step_duration_seconds_count", step)] == 1
    assert found[("blobflow_backlog_executions", ())] == 0
    assert found[("blobflow_asyncio_tasks", ())] >= 1  # at least the one serving this
    assert found[("blobflow_executions_parked_total", ())] == 0
    assert found[("blobflow_mongodb_commands_total", ())] >= 8  # one execution's at least
    updates = (("command", "update"),)
    assert found[("blobflow_mongodb_command_duration_seconds_count", updates)] >= 4
    assert found[("process_resident_memory_bytes", ())] > 10_000_000
    assert found[("blobflow_api_requests_total", (("route", "/metrics"), ("status", "200")))] >= 1
