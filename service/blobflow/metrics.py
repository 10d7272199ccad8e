"""Prometheus metrics: what came in, what ran, what it cost, and what is waiting.

Each service owns its registry (not the process-global one), so several
services in one process, as in tests, keep their counts apart. Labels are
bounded: workflow and step ids come from registered definitions, services
from configuration, reasons and statuses from fixed sets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from blobflow.core.records import StepRecord
from blobflow.core.step_requests import Caller, HttpResponse, StepRequest
from blobflow.errors import HttpCallError

# The `_created` series double every counter and no dashboard here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream

_STEP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_MONGODB_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_received = Counter(
            "blobflow_events_received", "Blob events taken from the stream", registry=r
        )
        self.events_rejected = Counter(
            "blobflow_events_rejected",
            "Blob events dead-lettered, by reason",
            ["reason"],
            registry=r,
        )
        self.executions_started = Counter(
            "blobflow_executions_started",
            "Executions started or resumed, by workflow",
            ["workflow_id"],
            registry=r,
        )
        self.executions_finished = Counter(
            "blobflow_executions_finished",
            "Executions that reached a final status, by workflow and status",
            ["workflow_id", "status"],
            registry=r,
        )
        self.step_duration = Histogram(
            "blobflow_step_duration_seconds",
            "Duration of a step's attempts, by workflow and step",
            ["workflow_id", "step_id"],
            buckets=_STEP_BUCKETS_S,
            registry=r,
        )
        self.step_retries = Counter(
            "blobflow_step_retries",
            "Step attempts beyond the first, by workflow and step",
            ["workflow_id", "step_id"],
            registry=r,
        )
        self.downstream_responses = Counter(
            "blobflow_downstream_responses",
            "Downstream calls by service and outcome (2xx..5xx, or error without a response)",
            ["service", "status_class"],
            registry=r,
        )
        self.deltas_stored = Counter("blobflow_deltas_stored", "Deltas stored", registry=r)
        self.deltas_published = Counter(
            "blobflow_deltas_published", "Delta events confirmed by JetStream", registry=r
        )
        self.delta_values_omitted = Counter(
            "blobflow_delta_events_values_omitted",
            "Delta events confirmed without their values, too large for NATS with them",
            registry=r,
        )
        self.deltas_unpublished = Gauge(
            "blobflow_delta_events_unpublished_executions",
            "Completed executions with delta events not confirmed, after the last"
            " republishing round (up to 100 beyond those backing off)",
            registry=r,
        )
        self.definitions_load_failed = Gauge(
            "blobflow_definitions_load_failed",
            "1 while the latest registered definitions do not load (the last good are in use)",
            registry=r,
        )
        self.backlog = Gauge(
            "blobflow_backlog_executions",
            "Executions queued or running in this process",
            registry=r,
        )
        self.bindings_disabled = Gauge(
            "blobflow_bindings_disabled",
            "Registered bindings no event starts, disabled by this version (reasons: /readyz)",
            registry=r,
        )
        self.executions_parked = Counter(
            "blobflow_executions_parked",
            "New executions stored for any replica to claim, this one being full",
            registry=r,
        )
        self.mongodb_commands = Counter(
            "blobflow_mongodb_commands",
            "Commands sent to MongoDB: its round trips",
            registry=r,
        )
        self.mongodb_command_duration = Histogram(
            "blobflow_mongodb_command_duration_seconds",
            "Time from sending a MongoDB command to its reply, by command name",
            ["command"],
            buckets=_MONGODB_BUCKETS_S,
            registry=r,
        )
        self.tasks = Gauge(
            "blobflow_asyncio_tasks",
            "asyncio tasks alive in this process: bounded by concurrency, not by backlog",
            registry=r,
        )
        self.tasks.set_function(_task_count)
        # process_resident_memory_bytes and friends (Linux), for the memory bound.
        ProcessCollector(registry=r)
        self.api_requests = Counter(
            "blobflow_api_requests",
            "HTTP API requests by route and status",
            ["route", "status"],
            registry=r,
        )

    def event_received(self) -> None:
        self.events_received.inc()

    def event_rejected(self, reason: str) -> None:
        self.events_rejected.labels(reason).inc()

    def parked(self, executions: int) -> None:
        self.executions_parked.inc(executions)

    def execution_started(self, workflow_id: str) -> None:
        self.executions_started.labels(workflow_id).inc()

    def execution_finished(self, workflow_id: str, status: str) -> None:
        self.executions_finished.labels(workflow_id, status).inc()

    def step_finished(self, workflow_id: str, record: StepRecord) -> None:
        if record.duration_ms is not None:
            self.step_duration.labels(workflow_id, record.id).observe(record.duration_ms / 1000)
        if record.attempts > 1:
            self.step_retries.labels(workflow_id, record.id).inc(record.attempts - 1)

    def downstream_response(self, service: str, status: int | None) -> None:
        outcome = f"{status // 100}xx" if status is not None else "error"
        self.downstream_responses.labels(service, outcome).inc()

    def stored(self, deltas: int) -> None:
        self.deltas_stored.inc(deltas)

    def published(self, deltas: int) -> None:
        self.deltas_published.inc(deltas)

    def values_omitted(self, events: int) -> None:
        self.delta_values_omitted.inc(events)

    def unpublished(self, executions: int) -> None:
        self.deltas_unpublished.set(executions)

    def watch_backlog(self, read: Callable[[], int]) -> None:
        self.backlog.set_function(read)

    def watch_disabled_bindings(self, read: Callable[[], int]) -> None:
        self.bindings_disabled.set_function(read)

    def api_request(self, route: str, status: int) -> None:
        self.api_requests.labels(route, str(status)).inc()

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type (0.0.4: what every scraper reads)."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


def _task_count() -> float:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # collected outside an event loop
        return 0


class MeteredCaller:
    """A step caller that counts each downstream outcome by service and status class."""

    def __init__(self, caller: Caller, metrics: Metrics) -> None:
        self.caller = caller
        self.metrics = metrics

    async def call(self, service: str, request: StepRequest, timeout_s: float) -> HttpResponse:
        try:
            response = await self.caller.call(service, request, timeout_s)
        except HttpCallError:
            self.metrics.downstream_response(service, None)
            raise
        self.metrics.downstream_response(service, response.status)
        return response
