"""Stream and consumer set-up against a real nats-server (§2)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
)

from blobflow.core.subjects import StreamNames
from blobflow.errors import StreamSetupError
from blobflow.messaging.streams import ensure_consumer, ensure_streams

CONSUMER: dict[str, Any] = {"ack_wait_s": 30.0, "max_ack_pending": 64, "max_deliver": -1}


@pytest.fixture
def names(stream_prefix: str) -> StreamNames:
    return StreamNames.prefixed(stream_prefix)


def test_prefixed_names() -> None:
    names = StreamNames.prefixed("t_1")
    assert (names.blobs, names.deltas, names.dlq) == ("t_1_BLOBS", "t_1_DELTAS", "t_1_BLOBFLOW_DLQ")
    assert (names.created_subject, names.updated_subject) == (
        "t_1.blobs.created",
        "t_1.blobs.updated",
    )
    assert (names.deltas_prefix, names.dlq_subject) == ("t_1.deltas", "t_1.blobflow.dlq.blobs")
    assert names.consumer == "t_1_blobflow"
    assert StreamNames().blobs == "BLOBS"


@pytest.mark.parametrize(
    "limits",
    [
        {"ack_wait_s": 0, "max_ack_pending": 1},
        {"ack_wait_s": 1, "max_ack_pending": 0},
        {"ack_wait_s": 1, "max_ack_pending": -2},
        {"ack_wait_s": 1, "max_ack_pending": 1, "max_deliver": 0},
    ],
)
@pytest.mark.asyncio
async def test_consumer_limits_are_checked_before_any_request(limits: dict[str, Any]) -> None:
    js: Any = None  # never reached
    with pytest.raises(ValueError, match="-1"):
        await ensure_consumer(js, StreamNames(), **limits)


@pytest.mark.asyncio
async def test_creates_all_three_streams_and_is_idempotent(
    nats_client: NatsClient, names: StreamNames, caplog: pytest.LogCaptureFixture
) -> None:
    js = nats_client.jetstream()
    await ensure_streams(js, names, duplicate_window_s=60)

    blobs, deltas, dlq = [
        (await js.stream_info(n)).config for n in (names.blobs, names.deltas, names.dlq)
    ]
    assert blobs.subjects == [names.created_subject, names.updated_subject]
    assert deltas.subjects == [f"{names.deltas_prefix}.>"]
    assert dlq.subjects == [names.dlq_subject]
    for config in (blobs, deltas, dlq):
        assert (config.storage, config.retention) == (StorageType.FILE, RetentionPolicy.LIMITS)
    assert deltas.duplicate_window == 60

    await js.publish(names.created_subject, b"{}")
    with caplog.at_level(logging.INFO, logger="blobflow.messaging.streams"):
        await ensure_streams(js, names, duplicate_window_s=60)
    assert caplog.records == []  # nothing created, added or different
    assert (await js.stream_info(names.blobs)).state.messages == 1


@pytest.mark.asyncio
async def test_existing_stream_keeps_messages_and_settings_and_gains_our_subjects(
    nats_client: NatsClient, names: StreamNames, caplog: pytest.LogCaptureFixture
) -> None:
    js = nats_client.jetstream()
    other = names.created_subject.replace("created", "other")
    await js.add_stream(
        name=names.blobs, subjects=[other], storage=StorageType.MEMORY, max_msgs=1000
    )
    await js.publish(other, b"1")
    await js.publish(other, b"2")

    with caplog.at_level(logging.WARNING, logger="blobflow.messaging.streams"):
        await ensure_streams(js, names)

    info = await js.stream_info(names.blobs)
    assert info.config.subjects == [other, names.created_subject, names.updated_subject]
    assert info.state.messages == 2
    assert (info.config.storage, info.config.max_msgs) == (StorageType.MEMORY, 1000)
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    assert "subjects added" in warnings
    assert "storage=memory where blobflow would create file" in warnings
    assert "max_msgs=1000" in warnings


@pytest.mark.asyncio
async def test_subjects_covered_by_a_wildcard_are_not_added_again(
    nats_client: NatsClient, names: StreamNames, stream_prefix: str
) -> None:
    js = nats_client.jetstream()
    await js.add_stream(name=names.blobs, subjects=[f"{stream_prefix}.blobs.*"])
    await ensure_streams(js, names)  # the server refuses overlaps within a stream
    assert (await js.stream_info(names.blobs)).config.subjects == [f"{stream_prefix}.blobs.*"]


@pytest.mark.asyncio
async def test_subjects_held_by_another_stream_are_reported(
    nats_client: NatsClient, names: StreamNames, stream_prefix: str
) -> None:
    js = nats_client.jetstream()
    await js.add_stream(name=f"{stream_prefix}_OTHER", subjects=[names.created_subject])
    with pytest.raises(StreamSetupError, match=f"cannot create stream {names.blobs}.*overlap"):
        await ensure_streams(js, names)


@pytest.mark.asyncio
async def test_deltas_duplicate_window_drops_a_repeated_msg_id(
    nats_client: NatsClient, names: StreamNames
) -> None:
    js = nats_client.jetstream()
    await ensure_streams(js, names)
    subject = f"{names.deltas_prefix}.studio.b-1"
    first = await js.publish(subject, b"a", headers={"Nats-Msg-Id": "exec-1:0"})
    again = await js.publish(subject, b"a", headers={"Nats-Msg-Id": "exec-1:0"})
    other = await js.publish(subject, b"b", headers={"Nats-Msg-Id": "exec-1:1"})
    assert (first.duplicate, again.duplicate, other.duplicate) == (None, True, None)
    assert again.seq == first.seq
    assert (await js.stream_info(names.deltas)).state.messages == 2


@pytest.mark.asyncio
async def test_consumer_is_created_with_our_config(
    nats_client: NatsClient, names: StreamNames
) -> None:
    js = nats_client.jetstream()
    await ensure_streams(js, names)
    info = await ensure_consumer(js, names, ack_wait_s=12.5, max_ack_pending=7, max_deliver=5)

    config = (await js.consumer_info(names.blobs, names.consumer)).config
    assert info.config == config
    assert config.durable_name == names.consumer
    assert (config.deliver_policy, config.ack_policy) == (DeliverPolicy.ALL, AckPolicy.EXPLICIT)
    assert (config.ack_wait, config.max_ack_pending, config.max_deliver) == (12.5, 7, 5)
    assert (config.filter_subject, config.filter_subjects, config.deliver_subject) == (None,) * 3
    # and it delivers both subjects
    await js.publish(names.created_subject, b"c")
    await js.publish(names.updated_subject, b"u")
    subscription = await js.pull_subscribe_bind(names.consumer, names.blobs)
    assert [m.data for m in await subscription.fetch(2, timeout=5)] == [b"c", b"u"]
    # a second call finds nothing to change
    assert (await ensure_consumer(js, names, **CONSUMER)).config.max_ack_pending == 64
    assert (await ensure_consumer(js, names, **CONSUMER)).config.ack_wait == 30


@pytest.mark.asyncio
async def test_consumer_drift_is_corrected_in_place(
    nats_client: NatsClient, names: StreamNames, caplog: pytest.LogCaptureFixture
) -> None:
    js = nats_client.jetstream()
    await ensure_streams(js, names)
    old = await _consumer(
        js,
        names,
        ack_wait=5,
        max_ack_pending=3,
        max_deliver=2,
        filter_subject=names.created_subject,
        backoff=[1.0],
    )
    await js.publish(names.created_subject, b"1")
    subscription = await js.pull_subscribe_bind(names.consumer, names.blobs)
    [message] = await subscription.fetch(1, timeout=5)
    await message.ack_sync()

    with caplog.at_level(logging.WARNING, logger="blobflow.messaging.streams"):
        returned = await ensure_consumer(js, names, **CONSUMER)

    info = await js.consumer_info(names.blobs, names.consumer)
    assert returned.config == info.config
    assert (info.config.ack_wait, info.config.max_ack_pending, info.config.max_deliver) == (
        30,
        64,
        -1,
    )
    assert (info.config.filter_subject, info.config.backoff) == (None, None)
    assert info.created == old.created  # updated, not recreated: the acked message stays acked
    assert info.ack_floor is not None
    assert info.ack_floor.stream_seq == 1
    assert (
        "ack_wait 1.0 -> 30.0" in caplog.text
    )  # with a backoff, the server reports its first step
    assert "max_ack_pending 3 -> 64" in caplog.text


@pytest.mark.parametrize(
    ("drift", "named"),
    [
        ({"deliver_policy": DeliverPolicy.NEW}, "deliver_policy=new (needs all)"),
        ({"ack_policy": AckPolicy.ALL}, "ack_policy=all (needs explicit)"),
        ({"deliver_subject": "push.here"}, "deliver_subject=push.here"),
    ],
)
@pytest.mark.asyncio
async def test_drift_the_server_cannot_fix_names_the_field_and_the_fix(
    nats_client: NatsClient, names: StreamNames, drift: dict[str, Any], named: str
) -> None:
    js = nats_client.jetstream()
    await ensure_streams(js, names)
    await _consumer(js, names, **drift)

    with pytest.raises(StreamSetupError) as raised:
        await ensure_consumer(js, names, **CONSUMER)

    message = str(raised.value)
    assert named in message
    assert f"nats consumer rm {names.blobs} {names.consumer}" in message
    assert (await js.consumer_info(names.blobs, names.consumer)).config.ack_wait == 5  # untouched


@pytest.mark.asyncio
async def test_consumer_without_its_stream_says_so(
    nats_client: NatsClient, names: StreamNames
) -> None:
    with pytest.raises(StreamSetupError, match="run ensure_streams first"):
        await ensure_consumer(nats_client.jetstream(), names, **CONSUMER)


async def _consumer(js: JetStreamContext, names: StreamNames, **config: Any) -> Any:
    """A consumer as an operator (or an older blobflow) might have left it."""
    base = ConsumerConfig(durable_name=names.consumer, ack_wait=5)
    return await js.add_consumer(names.blobs, base.evolve(**config))


@pytest.mark.asyncio
async def test_replicas_starting_together_agree(
    nats_client: NatsClient, names: StreamNames
) -> None:
    js = nats_client.jetstream()
    await asyncio.gather(ensure_streams(js, names), ensure_streams(js, names))
    infos = await asyncio.gather(*(ensure_consumer(js, names, **CONSUMER) for _ in range(2)))
    assert infos[0].config == infos[1].config
