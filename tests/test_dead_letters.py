"""Dead letters (§4): the JSON shape, payload encodings, truncation, and a real publish."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from blobflow.core.dead_letters import (
    MAX_DEAD_LETTER_BYTES,
    MAX_PAYLOAD_KEPT,
    dead_letter,
    dead_letter_msg_id,
)
from blobflow.core.jsonvalues import rfc3339
from blobflow.core.subjects import StreamNames
from blobflow.messaging.dead_letters import DeadLetterPublisher
from blobflow.messaging.streams import ensure_streams

RECEIVED = datetime(2025, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)


def letter(payload: bytes, **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "subject": "blobs.created",
        "stream_sequence": 42,
        "headers": {"Nats-Msg-Id": "e-1"},
        "payload": payload,
        "received_at": RECEIVED,
    }
    arguments |= overrides
    body = dead_letter("invalid_json", "expected value at line 1", **arguments)
    assert len(body) <= MAX_DEAD_LETTER_BYTES
    decoded: dict[str, Any] = json.loads(body)
    return decoded


def test_utf8_payload_is_kept_as_text_with_every_field() -> None:
    assert letter(b'{"blob_id": "b\xc3\xa9", ') == {
        "reason": "invalid_json",
        "detail": "expected value at line 1",
        "subject": "blobs.created",
        "stream_sequence": 42,
        "headers": {"Nats-Msg-Id": "e-1"},
        "payload": '{"blob_id": "bé", ',
        "received_at": "2025-03-04T05:06:07.891Z",
    }


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe", b'{"a": "\xc3"}', b"\xed\xa0\x80", b"ok\x00\x80"],
    ids=["bom-like", "cut-sequence", "encoded-surrogate", "nul-then-invalid"],
)
def test_invalid_utf8_is_base64(payload: bytes) -> None:
    got = letter(payload)
    assert got["payload_encoding"] == "base64"
    assert base64.b64decode(got["payload"]) == payload
    assert "payload_truncated" not in got


def test_nul_and_control_characters_stay_text() -> None:
    got = letter(b"a\x00b\x1fc")
    assert got["payload"] == "a\x00b\x1fc"
    assert "payload_encoding" not in got


def test_missing_headers_and_sequence() -> None:
    got = letter(b"x", headers=None, stream_sequence=None)
    assert (got["headers"], got["stream_sequence"]) == ({}, None)


def test_huge_text_is_cut_to_900_kib_on_a_character_boundary() -> None:
    payload = "é".encode() * (600 * 1024)  # 1.2 MiB, two bytes per character
    got = letter(payload)
    assert got["payload_truncated"] is True
    assert got["payload_bytes"] == len(payload)
    kept = got["payload"].encode()
    assert len(kept) == MAX_PAYLOAD_KEPT
    assert payload.startswith(kept)


def test_huge_text_split_inside_a_character_drops_that_character() -> None:
    payload = b"a" + "é".encode() * (600 * 1024)  # the cut falls inside an `é`
    kept = letter(payload)["payload"].encode()
    assert len(kept) == MAX_PAYLOAD_KEPT - 1
    assert payload.startswith(kept)


def test_text_that_escaping_would_blow_up_is_cut_to_fit() -> None:
    payload = b'"\x01' * (300 * 1024)  # 600 KiB raw; 2 + 6 bytes each once escaped
    got = letter(payload)
    assert got["payload_truncated"] is True
    assert payload.decode().startswith(got["payload"])
    assert len(got["payload"]) > 200_000  # cut to fit, not emptied


def test_huge_binary_payload_is_cut_so_its_base64_fits() -> None:
    payload = b"\xff" * (2 * 1024 * 1024)
    got = letter(payload)
    assert got["payload_encoding"] == "base64"
    assert (got["payload_truncated"], got["payload_bytes"]) == (True, len(payload))
    kept = base64.b64decode(got["payload"])
    assert payload.startswith(kept)
    assert len(kept) > 700 * 1024


def test_binary_payload_under_the_limit_is_whole() -> None:
    payload = b"\xff" + bytes(range(256)) * 2000  # 500 KiB: base64 still fits
    got = letter(payload)
    assert base64.b64decode(got["payload"]) == payload
    assert "payload_truncated" not in got


def test_huge_detail_and_headers_are_bounded() -> None:
    headers = {f"X-H{i}": "v" * 1000 for i in range(200)}
    body = dead_letter(
        "too_large",
        "d" * 100_000,
        subject="blobs.created",
        stream_sequence=1,
        headers=headers,
        payload=b"x" * (1024 * 1024),
        received_at=RECEIVED,
    )
    got = json.loads(body)
    assert len(body) <= MAX_DEAD_LETTER_BYTES
    assert got["headers_truncated"] is True
    assert 0 < len(got["headers"]) < len(headers)
    assert len(got["detail"]) < 5000


def test_lone_surrogates_in_text_fields_do_not_break_the_letter() -> None:
    body = dead_letter(
        "missing_field",
        "blob_id \ud800",
        subject="blobs.created",
        stream_sequence=1,
        headers={"X": "\udfff"},
        payload=b"{}",
        received_at=RECEIVED,
    )
    assert json.loads(body)["detail"] == "blob_id \ud800"


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), "2025-01-02T03:04:05.000Z"),
        (
            datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2))),
            "2025-01-02T01:04:05.123Z",
        ),
        (datetime(2025, 1, 2, 3, 4, 5), "2025-01-02T03:04:05.000Z"),  # naive: UTC
    ],
)
def test_received_at_is_rfc3339_utc(moment: datetime, text: str) -> None:
    assert rfc3339(moment) == text


@pytest.mark.asyncio
async def test_publish_to_the_dlq_stream_once_per_msg_id(
    nats_client: NatsClient, stream_prefix: str
) -> None:
    names = StreamNames.prefixed(stream_prefix)
    js = nats_client.jetstream()
    await ensure_streams(js, names)
    payload = b"\xff" * (2 * 1024 * 1024)  # over NATS's max payload: must be cut to publish
    body = dead_letter(
        "too_large",
        "2097152 bytes, the limit is 1048576",
        subject=names.created_subject,
        stream_sequence=7,
        headers={"Nats-Msg-Id": "e-7"},
        payload=payload,
        received_at=RECEIVED,
    )
    msg_id = dead_letter_msg_id(names.blobs, 7)
    assert msg_id == f"dlq:{names.blobs}:7"

    await DeadLetterPublisher(js, names.dlq_subject).send(body, msg_id)
    await DeadLetterPublisher(js, names.dlq_subject).send(body, msg_id)  # a redelivery

    info = await js.stream_info(names.dlq)
    assert info.state.messages == 1
    stored = await js.get_msg(names.dlq, 1)
    assert stored.data == body
    assert stored.headers is not None
    assert stored.headers["Nats-Msg-Id"] == msg_id
    assert json.loads(stored.data or b"")["payload_truncated"] is True
