"""JetStream set-up (§2): the BLOBS, DELTAS and BLOBFLOW_DLQ streams and blobflow's consumer.

A stream that exists belongs to its operator: it is never deleted or purged, only given
the subjects blobflow needs; other settings that differ from ours are logged, not changed.
The durable consumer is blobflow's own, and nats-py's `pull_subscribe` binds to it without
applying a new configuration, so drift is corrected here: in place where the server allows
it, otherwise `StreamSetupError` tells the operator what to do.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError

from blobflow.core.subjects import StreamNames, subject_covers
from blobflow.errors import StreamSetupError

logger = logging.getLogger(__name__)

# JetStream API error codes (nats-server's errors.json).
_STREAM_NAME_IN_USE: Final = 10058  # created meanwhile, e.g. by another replica starting
_STREAM_NOT_FOUND: Final = 10059
# Settings compared with what blobflow would create; a difference is only logged.
_STREAM_SETTINGS: Final = (
    *("storage", "retention", "num_replicas", "duplicate_window"),
    *("max_msgs", "max_bytes", "max_age", "discard"),
)
# Consumer fields the server cannot change in place, with the value blobflow needs.
_FIXED: Final = {"deliver_policy": DeliverPolicy.ALL.value, "ack_policy": AckPolicy.EXPLICIT.value}


def stream_configs(
    names: StreamNames, *, duplicate_window_s: float = 120, replicas: int = 1
) -> tuple[StreamConfig, ...]:
    """The streams as blobflow creates them; limits spelled out so drift is comparable."""
    # The duplicate window matters on all three: dead letters carry a Nats-Msg-Id too,
    # and producers may set one on BLOBS.
    base = StreamConfig(
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        num_replicas=replicas,
        max_msgs=-1,
        max_bytes=-1,
        max_age=0,
        discard=DiscardPolicy.OLD,
        duplicate_window=duplicate_window_s,
    )
    return (
        base.evolve(name=names.blobs, subjects=[names.created_subject, names.updated_subject]),
        base.evolve(name=names.deltas, subjects=[f"{names.deltas_prefix}.>"]),
        base.evolve(name=names.dlq, subjects=[names.dlq_subject]),
    )


async def ensure_streams(
    js: JetStreamContext, names: StreamNames, *, duplicate_window_s: float = 120, replicas: int = 1
) -> None:
    """Create each stream that is missing; adopt each one that exists (see module doc)."""
    for wanted in stream_configs(names, duplicate_window_s=duplicate_window_s, replicas=replicas):
        await _ensure_stream(js, wanted)


async def _ensure_stream(js: JetStreamContext, wanted: StreamConfig) -> None:
    name, subjects = str(wanted.name), list(wanted.subjects or [])
    try:
        existing = (await js.stream_info(name)).config
    except NotFoundError:
        try:
            await js.add_stream(wanted)
            logger.info("created stream %s on %s", name, ", ".join(subjects))
            return
        except APIError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise StreamSetupError(
                    f"cannot create stream {name} on {subjects}: {exc.description}. If another "
                    "stream already holds these subjects, move them out of it first."
                ) from exc
        existing = (await js.stream_info(name)).config  # another replica just created it
    have = list(existing.subjects or [])
    # A subject already covered by a wildcard of the stream must not be added: the server
    # refuses overlapping subjects within one stream.
    missing = [s for s in subjects if not any(subject_covers(h, s) for h in have)]
    if missing:
        try:
            await js.update_stream(existing.evolve(subjects=[*have, *missing]))
        except APIError as exc:
            raise StreamSetupError(
                f"stream {name} lacks subjects {missing} and refused to add them: "
                f"{exc.description}. Add them to the stream by hand."
            ) from exc
        logger.warning("stream %s existed without %s: subjects added", name, missing)
    for setting in _STREAM_SETTINGS:
        actual, expected = _plain(getattr(existing, setting)), _plain(getattr(wanted, setting))
        if not _same(actual, expected):
            message = "stream %s has %s=%s where blobflow would create %s; left as it is"
            logger.warning(message, name, setting, actual, expected)


async def ensure_consumer(
    js: JetStreamContext,
    names: StreamNames,
    *,
    ack_wait_s: float,
    max_ack_pending: int,
    max_deliver: int = -1,
) -> ConsumerInfo:
    """The durable pull consumer on BLOBS, created or brought to this configuration."""
    # 0 would mean "server default", and then show up as drift on every start.
    if not ack_wait_s > 0 or 0 in (max_ack_pending, max_deliver):
        raise ValueError(
            "ack_wait_s, max_ack_pending and max_deliver must be positive (the last two may "
            f"be -1 for no limit), got {ack_wait_s}, {max_ack_pending}, {max_deliver}"
        )
    if min(max_ack_pending, max_deliver) < -1:
        raise ValueError(f"-1 means no limit; got {max_ack_pending}, {max_deliver}")
    stream, durable = names.blobs, names.consumer
    # No filter: the consumer takes both subjects of BLOBS. No backoff: it would override
    # ack_wait, which the workers' in-progress heartbeats are sized against.
    owned: dict[str, Any] = {"ack_wait": ack_wait_s, "max_ack_pending": max_ack_pending}
    owned |= {"max_deliver": max_deliver, "filter_subject": None, "filter_subjects": None}
    owned["backoff"] = None
    try:
        info: ConsumerInfo = await js.consumer_info(stream, durable)
    except NotFoundError as exc:
        if exc.err_code == _STREAM_NOT_FOUND:
            raise _no_stream(stream) from exc
        fresh = ConsumerConfig(
            durable_name=durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            **owned,
        )
        created = await _add_consumer(js, stream, fresh)
        logger.info("created consumer %s on stream %s", durable, stream)
        return created
    wrong = [
        f"{field}={_plain(getattr(info.config, field))} (needs {value})"
        for field, value in _FIXED.items()
        if not _same(_plain(getattr(info.config, field)), value)
    ]
    if info.config.deliver_subject:
        wrong.append(f"deliver_subject={info.config.deliver_subject} (push; needs pull)")
    if wrong:
        raise StreamSetupError(
            f"consumer {durable} on stream {stream} has {'; '.join(wrong)}, which cannot be "
            f"changed on an existing consumer. Delete it (`nats consumer rm {stream} "
            f"{durable}`) and restart blobflow; the new consumer starts again from the "
            "first message still in the stream."
        )
    drift = {k: v for k, v in owned.items() if not _same(_plain(getattr(info.config, k)), v)}
    if not drift:
        return info
    changes = ", ".join(f"{k} {_plain(getattr(info.config, k))} -> {v}" for k, v in drift.items())
    logger.warning("consumer %s on stream %s: updating %s", durable, stream, changes)
    # The whole current config goes back, so settings we do not own stay as they are.
    return await _add_consumer(js, stream, info.config.evolve(**drift))


async def _add_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> ConsumerInfo:
    try:
        return await js.add_consumer(stream, config)
    except APIError as exc:
        if exc.err_code == _STREAM_NOT_FOUND:
            raise _no_stream(stream) from exc
        raise StreamSetupError(
            f"cannot create or update consumer {config.durable_name} on stream {stream}: "
            f"{exc.description}"
        ) from exc


def _no_stream(stream: str) -> StreamSetupError:
    return StreamSetupError(f"stream {stream} does not exist; run ensure_streams first")


def _plain(value: Any) -> Any:
    """An enum as its value, and unset however the server spells it (`""`, `[]`) as None."""
    value = getattr(value, "value", value)
    return None if value in ("", []) else value


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        # Durations travel as integer nanoseconds; compare them that way.
        return round(actual * 1e9) == round(expected * 1e9)
    return bool(actual == expected)
