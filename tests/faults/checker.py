"""The one checker every fault case ends with (RELIABILITY.md):

- one terminal execution per (event, binding), and none for anything else;
- per-blob delta versions 1..n, gapless, without duplicates;
- one delta event per delta id on DELTAS, and none for an unknown id;
- nothing left unacked or pending on the `blobflow` consumer.

`settle` waits until the system is quiet, then `check` says what is wrong.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.catalog import Catalog
from blobflow.core.records import TERMINAL
from tests.faults.stack import STREAMS

Db = AsyncDatabase[dict[str, Any]]
Key = tuple[str, str, str]


@dataclass
class Report:
    events: int = 0
    expected_executions: int = 0
    terminal: Counter[str] = field(default_factory=Counter)
    deltas: int = 0
    delta_events: int = 0
    duplicates: int = 0
    redelivered: int = 0
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.terminal.items()))
        head = (
            f"{self.events} events, {self.expected_executions} executions expected "
            f"({statuses}), {self.deltas} deltas, {self.delta_events} delta events, "
            f"{self.duplicates} duplicates, {self.redelivered} redelivered"
        )
        return "\n".join([head, *self.problems])


def expected_keys(catalog: Catalog, events: Sequence[Mapping[str, Any]]) -> set[Key]:
    return {
        (event["event_id"], binding.provider_id, binding.workflow_id)
        for event in events
        for binding in catalog.match(event, "onCreate")
    }


async def settle(db: Db, js: JetStreamContext, expected: int, *, timeout_s: float = 120) -> None:
    """Wait until `expected` executions are terminal and the consumer has nothing in hand."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        done = await db.executions.count_documents({"status": {"$in": sorted(TERMINAL)}})
        try:
            info = await js.consumer_info(STREAMS.blobs, STREAMS.consumer)
        except (NatsError, TimeoutError):
            # A cluster electing a new consumer leader does not answer for a while.
            await asyncio.sleep(0.5)
            continue
        idle = info.num_ack_pending == 0 and info.num_pending == 0
        unpublished = await db.executions.count_documents(
            {"status": "completed", "deltas_published": False}
        )
        if done >= expected and idle and unpublished == 0:
            return
        await asyncio.sleep(0.25)


async def check(
    db: Db, js: JetStreamContext, catalog: Catalog, events: Sequence[Mapping[str, Any]]
) -> Report:
    report = Report(events=len(events))
    expected = expected_keys(catalog, events)
    report.expected_executions = len(expected)
    found: Counter[Key] = Counter()
    async for document in db.executions.find(
        {}, {"event_id": True, "provider_id": True, "workflow_id": True, "status": True}
    ):
        key = (document["event_id"], document["provider_id"], document["workflow_id"])
        found[key] += 1
        if document["status"] in TERMINAL:
            report.terminal[document["status"]] += 1
        else:
            report.problems.append(f"not terminal: {key} is {document['status']}")
    for key in expected - set(found):
        report.problems.append(f"no execution for {key}")
    for key in set(found) - expected:
        report.problems.append(f"an execution nobody asked for: {key}")
    for key, count in found.items():
        if count > 1:
            report.duplicates += count - 1
            report.problems.append(f"{count} executions for {key}")

    versions: dict[str, list[int]] = {}
    delta_ids: list[str] = []
    async for delta in db.deltas.find({}, {"blob_id": True, "version": True}):
        versions.setdefault(delta["blob_id"], []).append(delta["version"])
        delta_ids.append(delta["_id"])
    report.deltas = len(delta_ids)
    for blob_id, numbers in versions.items():
        if sorted(numbers) != list(range(1, len(numbers) + 1)):
            report.problems.append(f"blob {blob_id}: versions {sorted(numbers)} are not 1..n")

    published = await _delta_event_ids(js)
    report.delta_events = sum(published.values())
    for delta_id in delta_ids:
        if published[delta_id] != 1:
            report.problems.append(f"delta {delta_id}: {published[delta_id]} delta events")
    for delta_id in set(published) - set(delta_ids):
        report.problems.append(f"a delta event for unknown delta {delta_id}")

    info = await js.consumer_info(STREAMS.blobs, STREAMS.consumer)
    report.redelivered = info.num_redelivered
    if info.num_ack_pending or info.num_pending:
        report.problems.append(
            f"consumer: {info.num_pending} pending, {info.num_ack_pending} unacked"
        )
    return report


async def _delta_event_ids(js: JetStreamContext) -> Counter[str]:
    """`Nats-Msg-Id` of every message on DELTAS."""
    info = await js.stream_info(STREAMS.deltas)
    ids: Counter[str] = Counter()
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        if not info.state.messages:
            break
        message = await js.get_msg(STREAMS.deltas, sequence)
        ids[(message.headers or {}).get("Nats-Msg-Id", "")] += 1
    return ids


def inverted_share(rows: list[tuple[int, float]]) -> float:
    """Of the pairs with different priorities, the share where the lower one started first."""
    pairs = inverted = 0
    for (priority_a, started_a), (priority_b, started_b) in combinations(rows, 2):
        if priority_a == priority_b:
            continue
        pairs += 1
        higher_first = (priority_a > priority_b) == (started_a <= started_b)
        inverted += not higher_first
    return inverted / pairs if pairs else 0.0
