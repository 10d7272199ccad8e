"""A fuzz campaign on `blobs.created`: thousands of random, mutated and hostile
messages among good events, on two replicas.

Every message must be accounted for: acknowledged once, never more than twice
delivered; each bad one dead-lettered once with the reason blobflow's own
decoder gives it; each good one run to its deltas (the checker's invariants).
The campaign is seeded: a failure names its seed and replays.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import bson
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.events import decode_event
from blobflow.core.triggers import EventKind
from blobflow.errors import EventError
from tests.faults.checker import check, expected_keys, settle
from tests.faults.stack import STREAMS, Stack
from tests.servers import Downstream
from tests.support import example_catalog, script_studio

pytestmark = pytest.mark.timeout(600)
Db = AsyncDatabase[dict[str, Any]]
CATALOG = example_catalog()
SEED = 20261208
MESSAGES = 3_000
GOOD_SHARE = 0.06  # good events cost workflow runs; the rest is cheap to reject
MAX_EVENT_BYTES = 64 * 1024  # below NATS's max payload, so `too_large` is reachable
KINDS: dict[str, EventKind] = {
    STREAMS.created_subject: "onCreate",
    STREAMS.updated_subject: "onUpdate",
}


def good(rng: random.Random, number: int) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"fuzz-{number}",
        "blob_id": f"blob-{rng.randrange(30)}",
        "user_id": "user-1",
        "content": "".join(rng.choice("abc ✓é") for _ in range(rng.randrange(40))),
    }
    if rng.random() < 0.3:
        event["metadata"] = {"type": "chapter", "chapter_number": rng.randrange(99)}
    return event


def nested(depth: int, rng: random.Random) -> Any:
    value: Any = rng.choice([1, "x", None, True])
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def hostile(rng: random.Random, number: int) -> bytes:
    """A valid-looking event carrying one of the values MongoDB cannot hold, or odd
    values it can (which must run)."""
    base = good(rng, number)
    head = orjson.dumps(base)[:-1]
    choices: list[Callable[[], bytes]] = [
        lambda: head + b', "note": "\\ud800"}',
        lambda: head + b', "n": 1234567890123456789, "note": "\\udc00x"}',
        lambda: head + b', "\\udfff": 1}',
        lambda: orjson.dumps({**base, "metadata": {"a\x00b": 1}}),
        lambda: head + b', "d": ' + orjson.dumps(nested(rng.randrange(85, 120), rng)) + b"}",
        lambda: head + b', "big": ' + str(rng.randrange(2**63, 2**90)).encode() + b"}",
        lambda: head + b', "x": NaN}',
        lambda: head + b', "x": 1e400}',
        lambda: head + b', "deep": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        lambda: orjson.dumps({**base, "$where": "1", "a.b": [1] * rng.randrange(2000)}),
        lambda: orjson.dumps({**base, "content": "é" * rng.randrange(20_000, 40_000)}),
        lambda: orjson.dumps({**base, "content": "x" * rng.randrange(60_000, 200_000)}),
        lambda: orjson.dumps({**base, "event_id": "e\n\x00" + str(number)}),
    ]
    return rng.choice(choices)()


def shapeless(rng: random.Random) -> bytes:
    """Bytes, and JSON of every shape that is not an event."""
    choices: list[Callable[[], bytes]] = [
        lambda: rng.randbytes(rng.randrange(0, 300)),
        lambda: orjson.dumps(rng.choice([[], [1, 2], "text", 7, 1.5, None, True, {}])),
        lambda: orjson.dumps({"event_id": rng.choice(["", "e" * 201, 7, None]), "blob_id": "b"}),
        lambda: orjson.dumps({"event_id": "e", "blob_id": "b", "user_id": ["u"]}),
        lambda: orjson.dumps({"event_id": "e", "blob_id": "b", "user_id": "u", "event": "x"}),
        lambda: b"\xef\xbb\xbf" + orjson.dumps({"event_id": "e", "blob_id": "b"}),
        lambda: b'{"event_id": "e", "blob_id": "b", "user_id": "u"',
    ]
    return rng.choice(choices)()


def mutated(rng: random.Random, number: int) -> bytes:
    """A good event with a few bytes flipped, cut or doubled."""
    data = bytearray(orjson.dumps(good(rng, number)))
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(data))
        operation = rng.randrange(3)
        if operation == 0:
            data[at] = rng.randrange(256)
        elif operation == 1:
            del data[at]
        else:
            data[at:at] = data[at : at + rng.randrange(1, 8)]
    return bytes(data)


def campaign(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    messages: list[bytes] = []
    for number in range(MESSAGES):
        roll = rng.random()
        if roll < GOOD_SHARE:
            messages.append(orjson.dumps(good(rng, number)))
        elif roll < 0.45:
            messages.append(hostile(rng, number))
        elif roll < 0.75:
            messages.append(shapeless(rng))
        else:
            messages.append(mutated(rng, number))
    return messages


def expected_outcome(payload: bytes) -> dict[str, Any] | str:
    """What blobflow must make of a message: the event it runs, or the dead letter's reason."""
    try:
        data = dict(decode_event(payload, STREAMS.created_subject, MAX_EVENT_BYTES, KINDS).data)
    except EventError as exc:
        return exc.reason
    try:
        bson.encode(data)
    except OverflowError:  # an integer beyond 64 bits: valid, but the store refuses it
        return "unstorable"
    return data


@pytest.mark.asyncio
async def test_a_fuzz_campaign_leaves_every_message_accounted_for(
    stack: Stack, downstream: Downstream, nats_client: NatsClient, mongo_db: Db
) -> None:
    script_studio(downstream)
    for _ in range(2):
        await stack.start(env={"BLOBFLOW_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES)})
    messages = campaign(SEED)
    outcomes = [expected_outcome(payload) for payload in messages]
    # A mutation may give two accepted messages one event id: the first one's
    # executions stand for both, and a binding only the second matches runs too.
    events = [outcome for outcome in outcomes if isinstance(outcome, dict)]
    rejected = Counter(outcome for outcome in outcomes if isinstance(outcome, str))

    js = nats_client.jetstream()
    started = time.monotonic()
    sequences = [(await js.publish(STREAMS.created_subject, m)).seq for m in messages]
    expected_executions = len(expected_keys(CATALOG, events))
    await settle(mongo_db, js, expected_executions, timeout_s=400)
    took_s = time.monotonic() - started

    report = await check(mongo_db, js, CATALOG, events)
    dlq = await js.stream_info(STREAMS.dlq)
    letters: dict[int, str] = {}
    for sequence in range(dlq.state.first_seq, dlq.state.last_seq + 1):
        letter = orjson.loads((await js.get_msg(STREAMS.dlq, sequence)).data or b"{}")
        assert letter["stream_sequence"] not in letters, f"dead-lettered twice: {letter}"
        letters[letter["stream_sequence"]] = letter["reason"]
    wrong = [
        (sequence, letters.get(sequence), outcome)
        for sequence, outcome in zip(sequences, outcomes, strict=True)
        if letters.get(sequence) != (outcome if isinstance(outcome, str) else None)
    ]
    info = await js.consumer_info(STREAMS.blobs, STREAMS.consumer)
    print(
        f"\nseed {SEED}: {len(messages)} messages in {took_s:.1f} s: {len(events)} good events, "
        f"{sum(rejected.values())} dead letters ({dict(rejected.most_common())}); "
        f"{report}; delivered {info.delivered.consumer_seq} times for {len(messages)} messages"
    )
    assert report.problems == [], str(report)
    assert wrong == [], wrong[:20]
    assert info.num_ack_pending == 0
    assert info.num_pending == 0
    assert info.ack_floor.stream_seq == sequences[-1]  # every message acknowledged
    # Each message delivered once; a redelivery (at most one more) only after a nak.
    assert info.delivered.consumer_seq <= len(messages) + report.redelivered
    assert report.redelivered <= len(messages) // 100
