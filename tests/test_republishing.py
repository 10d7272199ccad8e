"""Republishing delta events NATS did not confirm: each execution on its own, a failing
one backing off, none hiding another (in-memory store and publisher, a manual clock)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from blobflow.errors import BusUnavailable
from blobflow.metrics import Metrics
from blobflow.runtime.republishing import Republisher
from tests.memory import ManualClock, MemoryExecutionStore, MemoryPublisher
from tests.unpublished import PickyPublisher, published, unpublished

ROUND_S = 10.0
CAP_S = 80.0


def republisher(
    store: MemoryExecutionStore, publisher: MemoryPublisher, **kwargs: Any
) -> tuple[Republisher, ManualClock]:
    clock = ManualClock()
    made = Republisher(store, publisher, base_s=ROUND_S, cap_s=CAP_S, clock=clock, **kwargs)
    return made, clock


@pytest.mark.asyncio
async def test_a_failing_execution_neither_stops_the_round_nor_is_retried_every_round() -> None:
    store, ids = await unpublished(3)
    publisher = PickyPublisher()
    publisher.refused = {ids[0]}  # the oldest
    republish, clock = republisher(store, publisher)

    assert await republish.round() == 2
    assert published(store) == {ids[1], ids[2]}
    assert republish.backing_off() == {ids[0]}

    # Tried again after one round, then two, four, eight, and never more than `cap_s` apart.
    tried_at = [0.0]
    for _ in range(30):
        clock.advance(ROUND_S)
        publisher.attempts.clear()
        assert await republish.round() == 0
        if publisher.attempts:
            assert publisher.attempts == [ids[0]]
            tried_at.append(clock())
    gaps = [later - earlier for earlier, later in itertools.pairwise(tried_at)]
    assert gaps == [10.0, 20.0, 40.0, 80.0, 80.0]

    publisher.refused.clear()
    clock.advance(CAP_S)
    assert await republish.round() == 1
    assert published(store) == set(ids)
    assert republish.tracked == {}


@pytest.mark.asyncio
async def test_old_executions_backing_off_do_not_hide_newer_ones() -> None:
    store, ids = await unpublished(7)
    publisher = PickyPublisher()
    publisher.refused = set(ids[:4])  # more than a round's limit
    republish, clock = republisher(store, publisher, limit=2)

    for _ in range(4):
        await republish.round()
        clock.advance(ROUND_S)

    assert published(store) == set(ids[4:])
    assert republish.tracked.keys() == set(ids[:4])
    assert all(backoff.own for backoff in republish.tracked.values())


@pytest.mark.asyncio
async def test_an_unexpected_error_is_one_executions_failure() -> None:
    store, ids = await unpublished(3)
    publisher = PickyPublisher()
    publisher.unexpected = {ids[1]}
    republish, _ = republisher(store, publisher)

    assert await republish.round() == 2
    assert published(store) == {ids[0], ids[2]}
    assert republish.backing_off() == {ids[1]}


@pytest.mark.asyncio
async def test_while_nats_is_down_rounds_stop_early_and_once_it_is_back_none_waits() -> None:
    store, ids = await unpublished(5)
    publisher = PickyPublisher()
    publisher.error = BusUnavailable("no responders")
    republish, clock = republisher(store, publisher)

    attempts: list[int] = []
    for _ in range(4):
        publisher.attempts.clear()
        assert await republish.round() == 0
        attempts.append(len(publisher.attempts))
        clock.advance(ROUND_S)
    # Three failures and nothing through: NATS is down, the rest wait for the next round.
    assert attempts[0] == 3
    assert max(attempts) == 3
    assert republish.tracked.keys() == set(ids)
    assert not any(backoff.own for backoff in republish.tracked.values())
    assert republish.backing_off()  # some wait out a backoff

    publisher.error = None
    assert await republish.round() == 5  # the first to get through lets all the others go
    assert published(store) == set(ids)
    assert republish.tracked == {}


@pytest.mark.asyncio
async def test_the_executions_left_unpublished_are_a_metric() -> None:
    store, ids = await unpublished(3)
    publisher = PickyPublisher()
    publisher.refused = {ids[0], ids[2]}
    metrics = Metrics()
    republish, clock = republisher(store, publisher, metrics=metrics)

    await republish.round()
    exposition = metrics.exposition()[0].decode()
    assert "\nblobflow_delta_events_unpublished_executions 2.0\n" in exposition

    publisher.refused.clear()
    clock.advance(ROUND_S)
    await republish.round()
    exposition = metrics.exposition()[0].decode()
    assert "\nblobflow_delta_events_unpublished_executions 0.0\n" in exposition
