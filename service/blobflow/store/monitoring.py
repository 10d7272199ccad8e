"""What the database costs: every command a MongoDB client sends, counted and timed."""

from __future__ import annotations

from pymongo import monitoring

from blobflow.metrics import Metrics


class MongoCommands(monitoring.CommandListener):
    """Counts and times every command a MongoDB client sends (pass it as an event listener).

    Command names come from the driver's fixed set, so the label stays bounded.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.counter = metrics.mongodb_commands
        self.duration = metrics.mongodb_command_duration

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.counter.inc()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self.duration.labels(event.command_name).observe(event.duration_micros / 1e6)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.duration.labels(event.command_name).observe(event.duration_micros / 1e6)
