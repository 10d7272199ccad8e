"""Blob events (CONTRACT §3) and the reasons bad ones are dead-lettered with (§4)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from blobflow.core.events import (
    MAX_EVENT_BYTES,
    MAX_ID_CHARS,
    SUBJECT_KINDS,
    BlobEvent,
    check_event,
    decode_event,
)
from blobflow.core.jsonvalues import kind as json_kind
from blobflow.core.triggers import EventKind
from blobflow.errors import BlobflowError, EventError

IDS: dict[str, Any] = {"event_id": "e-1", "blob_id": "b-1", "user_id": "u-1"}
CREATED = "blobs.created"
UPDATED = "blobs.updated"


def event(**fields: Any) -> bytes:
    """An event with the three ids, `fields` merged over them; `None` drops a field."""
    data = {**IDS, **fields}
    return orjson.dumps({k: v for k, v in data.items() if v is not None})


def decode_error(payload: bytes, subject: str | None = CREATED, max_bytes: int = 1000) -> str:
    with pytest.raises(EventError) as info:
        decode_event(payload, subject, max_bytes)
    assert info.value.detail
    assert str(info.value) == f"{info.value.reason}: {info.value.detail}"
    return info.value.reason


# ---------------------------------------------------------------- bad messages

DEEP_ARRAY = b"[" * 5000 + b"]" * 5000
DEEP_OBJECT = b'{"a":' * 5000 + b"1" + b"}" * 5000


def bad(name: str, reason: str, payload: bytes, subject: str | None = CREATED) -> Any:
    return pytest.param(payload, subject, reason, id=name)


BAD: list[Any] = [
    bad("not-json", "invalid_json", b"{not json"),
    bad("empty", "invalid_json", b""),
    bad("blank", "invalid_json", b"   "),
    bad("truncated", "invalid_json", event()[:-1]),
    bad("trailing-garbage", "invalid_json", event() + b"x"),
    bad("invalid-utf8", "invalid_json", b'{"event_id":"\xff"}'),
    bad("encoded-surrogate", "invalid_json", b'{"event_id":"\xed\xa0\x80"}'),
    # Valid JSON text, but no UTF-8 holds it: the database cannot store it.
    bad(
        "lone-high-surrogate-escape",
        "unstorable",
        b'{"event_id":"\\ud800","blob_id":"b","user_id":"u"}',
    ),
    bad(
        "lone-low-surrogate-escape",
        "unstorable",
        b'{"event_id":"a\\udc00","blob_id":"b","user_id":"u"}',
    ),
    bad("raw-nul-in-string", "invalid_json", b'{"event_id":"a\x00","blob_id":"b","user_id":"u"}'),
    bad("utf8-bom", "invalid_json", b"\xef\xbb\xbf" + event()),
    bad("utf-16", "invalid_json", event().decode().encode("utf-16")),
    bad("nan", "invalid_json", event(content=0)[:-2] + b"NaN}"),
    bad("number-overflow", "invalid_json", event(content=0)[:-2] + b"1e400}"),
    bad("5000-nested-arrays", "invalid_json", DEEP_ARRAY),
    bad("5000-nested-objects", "invalid_json", DEEP_OBJECT),
    bad("array", "not_an_object", b"[]"),
    bad("array-of-event", "not_an_object", orjson.dumps([IDS])),
    bad("string", "not_an_object", b'"event"'),
    bad("null", "not_an_object", b"null"),
    bad("number", "not_an_object", b"42"),
    bad("bool", "not_an_object", b"true"),
    bad("missing-event-id", "missing_field", event(event_id=None)),
    bad("missing-blob-id", "missing_field", event(blob_id=None)),
    bad("missing-user-id", "missing_field", event(user_id=None)),
    bad("empty-object", "missing_field", b"{}"),
    bad("no-event-no-subject", "missing_field", event(), None),
    bad("no-event-empty-subject", "missing_field", event(), ""),
    bad("no-event-unknown-subject", "missing_field", event(), "blobs.deleted"),
    bad("empty-event-id", "invalid_field", event(event_id="")),
    bad("empty-blob-id", "invalid_field", event(blob_id="")),
    bad("empty-user-id", "invalid_field", event(user_id="")),
    bad("201-char-event-id", "invalid_field", event(event_id="e" * 201)),
    bad("201-char-blob-id", "invalid_field", event(blob_id="b" * 201)),
    bad("201-emoji-user-id", "invalid_field", event(user_id="\U0001f600" * 201)),
    bad("int-event-id", "invalid_field", event(event_id=1)),
    bad("float-blob-id", "invalid_field", event(blob_id=1.5)),
    bad("bool-user-id", "invalid_field", event(user_id=True)),
    bad("list-blob-id", "invalid_field", event(blob_id=["b"])),
    bad("object-blob-id", "invalid_field", event(blob_id={"$ne": ""})),
    bad("null-event-id", "invalid_field", b'{"event_id":null,"blob_id":"b","user_id":"u"}'),
    bad("unknown-event", "invalid_field", event(event="onDelete")),
    bad("event-case-matters", "invalid_field", event(event="oncreate"), None),
    bad("empty-event", "invalid_field", event(event=""), None),
    bad("list-event", "invalid_field", event(event=["onCreate"]), None),
    bad("update-on-created", "event_mismatch", event(event="onUpdate")),
    bad("create-on-updated", "event_mismatch", event(event="onCreate"), UPDATED),
    bad("provider-ids-string", "invalid_field", event(provider_ids="p1")),
    bad("provider-ids-int", "invalid_field", event(provider_ids=["p1", 2])),
    bad("provider-ids-nested", "invalid_field", event(provider_ids=[["p1"]])),
    bad("provider-ids-object", "invalid_field", event(provider_ids={"p1": True})),
    bad("metadata-array", "invalid_field", event(metadata=[])),
    bad("metadata-string", "invalid_field", event(metadata="x")),
    bad("metadata-false", "invalid_field", event(metadata=False)),
    bad("metadata-zero", "invalid_field", event(metadata=0)),
    bad("previous-array", "invalid_field", event(previous=[]), UPDATED),
    bad("previous-string", "invalid_field", event(previous="x"), UPDATED),
    bad("occurred-at-no-timezone", "invalid_field", event(occurred_at="2024-01-01T10:00:00")),
    bad("occurred-at-date-only", "invalid_field", event(occurred_at="2024-01-01")),
    bad("occurred-at-garbage", "invalid_field", event(occurred_at="yesterday at noon UTC")),
    bad("occurred-at-no-such-day", "invalid_field", event(occurred_at="2024-02-30T10:00:00Z")),
    bad("occurred-at-hour-25", "invalid_field", event(occurred_at="2024-01-01T25:00:00Z")),
    bad("occurred-at-utc-word", "invalid_field", event(occurred_at="2024-01-01T10:00:00UTC")),
    bad("occurred-at-epoch", "invalid_field", event(occurred_at=1704103200)),
    bad("occurred-at-empty", "invalid_field", event(occurred_at="")),
]


@pytest.mark.parametrize(("payload", "subject", "reason"), BAD)
def test_bad_messages_have_a_reason(payload: bytes, subject: str | None, reason: str) -> None:
    assert decode_error(payload, subject, max_bytes=100_000) == reason


@pytest.mark.parametrize(
    ("payload", "max_bytes"),
    [
        pytest.param(event(content="x" * 100), 100, id="valid-event"),
        pytest.param(b"\xff" * 101, 100, id="garbage-is-too-large-first"),
        pytest.param(b" " * (MAX_EVENT_BYTES + 1), MAX_EVENT_BYTES, id="default-limit"),
    ],
)
def test_over_max_bytes_is_too_large(payload: bytes, max_bytes: int) -> None:
    assert len(payload) > max_bytes
    assert decode_error(payload, CREATED, max_bytes) == "too_large"


def test_default_limit_is_one_mebibyte() -> None:
    assert MAX_EVENT_BYTES == 1024 * 1024
    with pytest.raises(EventError) as info:
        decode_event(b" " * (MAX_EVENT_BYTES + 1), CREATED)
    assert info.value.reason == "too_large"


def test_exactly_max_bytes_is_accepted() -> None:
    payload = event()
    assert decode_event(payload, CREATED, max_bytes=len(payload)).blob_id == "b-1"


def test_event_error_is_a_blobflow_value_error() -> None:
    error = EventError("invalid_field", "metadata must be an object")
    assert isinstance(error, BlobflowError)
    assert isinstance(error, ValueError)
    assert (error.reason, error.detail) == ("invalid_field", "metadata must be an object")
    assert str(error) == "invalid_field: metadata must be an object"


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        pytest.param({"blob_id": "b", "user_id": "u"}, "event_id is required", id="missing"),
        pytest.param({**IDS, "user_id": ""}, "user_id must be text of 1 to 200", id="empty"),
        pytest.param({**IDS, "event": "x"}, "event must be onCreate or onUpdate", id="event"),
        pytest.param([], "expected a JSON object, got an array", id="array"),
        pytest.param(None, "expected a JSON object, got null", id="null"),
        pytest.param("s", "expected a JSON object, got a str", id="string"),
    ],
)
def test_details_name_the_problem(data: Any, detail: str) -> None:
    with pytest.raises(EventError) as info:
        check_event(data, "onCreate")
    assert detail in info.value.detail


# ---------------------------------------------------------------- good messages


@pytest.mark.parametrize(
    ("payload", "subject", "expected"),
    [
        pytest.param(event(), CREATED, "onCreate", id="from-created-subject"),
        pytest.param(event(), UPDATED, "onUpdate", id="from-updated-subject"),
        pytest.param(event(event="onCreate"), None, "onCreate", id="from-field-create"),
        pytest.param(event(event="onUpdate"), None, "onUpdate", id="from-field-update"),
        pytest.param(event(event="onCreate"), CREATED, "onCreate", id="both-agree-create"),
        pytest.param(event(event="onUpdate"), UPDATED, "onUpdate", id="both-agree-update"),
        pytest.param(event(event="onUpdate"), "blobs.other", "onUpdate", id="unknown-subject"),
        pytest.param(
            b'{"event_id":"e","blob_id":"b","user_id":"u","event":null}',
            UPDATED,
            "onUpdate",
            id="null-event-is-absent",
        ),
    ],
)
def test_kind(payload: bytes, subject: str | None, expected: EventKind) -> None:
    assert decode_event(payload, subject).kind == expected


def test_subject_kinds() -> None:
    assert dict(SUBJECT_KINDS) == {CREATED: "onCreate", UPDATED: "onUpdate"}


def test_check_event_takes_the_subject_kind() -> None:
    assert check_event(dict(IDS), "onUpdate").kind == "onUpdate"
    with pytest.raises(EventError) as info:
        check_event({**IDS, "event": "onCreate"}, "onUpdate")
    assert info.value.reason == "event_mismatch"


def test_full_event_keeps_every_field() -> None:
    data = {
        **IDS,
        "event": "onUpdate",
        "provider_ids": ["book-writer", "p.2"],
        "metadata": {"type": "chapter", "a.b": 1, "$where": "1 == 1"},
        "content": {"text": "hello", "n": [1, 2.5, None]},
        "previous": {"metadata": {"type": "draft"}, "content": None},
        "occurred_at": "2024-01-01T10:00:00.123Z",
        "unknown_field": {"kept": True},
        "$where": "sleep(1000)",
        "a.b": "dotted",
    }
    checked = decode_event(orjson.dumps(data), UPDATED)
    assert isinstance(checked, BlobEvent)
    assert checked.kind == "onUpdate"
    assert dict(checked.data) == data
    assert (checked.event_id, checked.blob_id, checked.user_id) == ("e-1", "b-1", "u-1")


def test_check_event_does_not_change_its_argument() -> None:
    data = dict(IDS)
    checked = check_event(data, "onCreate")
    assert data == IDS
    assert checked.data["metadata"] == {}


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="absent"),
        pytest.param({"metadata": None}, id="null"),
        pytest.param({"metadata": {}}, id="empty"),
    ],
)
def test_metadata_defaults_to_empty_object(fields: dict[str, Any]) -> None:
    raw = orjson.dumps({**IDS, **fields})
    assert decode_event(raw, CREATED).data["metadata"] == {}


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"provider_ids": []}, id="no-provider-ids"),
        pytest.param({"provider_ids": None}, id="null-provider-ids"),
        pytest.param({"previous": None}, id="null-previous"),
        pytest.param({"previous": {}}, id="empty-previous"),
        pytest.param({"occurred_at": None}, id="null-occurred-at"),
        pytest.param({"content": None}, id="null-content"),
        pytest.param({"content": "text"}, id="string-content"),
        pytest.param({"content": [1, {"a": []}]}, id="array-content"),
        pytest.param({"event_id": "e" * MAX_ID_CHARS}, id="200-char-id"),
        pytest.param({"blob_id": "\U0001f600" * MAX_ID_CHARS}, id="200-emoji-id"),
    ],
)
def test_optional_fields_accepted(fields: dict[str, Any]) -> None:
    raw = orjson.dumps({**IDS, **fields})
    checked = decode_event(raw, CREATED)
    for name, value in fields.items():
        assert checked.data[name] == value


@pytest.mark.parametrize(
    "value",
    [
        "2024-01-01T10:00:00Z",
        "2024-01-01T10:00:00z",
        "2024-01-01t10:00:00Z",
        "2024-01-01 10:00:00Z",
        "2024-01-01T10:00:00+02:00",
        "2024-01-01T10:00:00-05:30",
        "2024-01-01T10:00:00.5Z",
        "2024-01-01T10:00:00.123456+00:00",
        "2024-02-29T23:59:59Z",
    ],
)
def test_rfc3339_occurred_at_accepted(value: str) -> None:
    assert decode_event(event(occurred_at=value), CREATED).data["occurred_at"] == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("2024-01-01T10:00+00:00", id="no-seconds"),
        pytest.param("2024-01-01T10:00:00+0100", id="offset-without-colon"),
        pytest.param("2024-01-01T10:00:00+01", id="hour-only-offset"),
        pytest.param("2024-W01-1T10:00:00Z", id="week-date"),
        pytest.param("2024-01-01T100000+0000", id="basic-time"),
        pytest.param("2024-01-01T10:00:00,5Z", id="comma-fraction"),
        pytest.param("2024-01-01T10:00:00 Z", id="space-before-z"),
    ],
)
def test_iso8601_forms_that_are_not_rfc3339_are_rejected(value: str) -> None:
    assert decode_error(event(occurred_at=value), CREATED) == "invalid_field"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("a.b", id="dot"),
        pytest.param("blob.*", id="star"),
        pytest.param("blob.>", id="gt"),
        pytest.param("with spaces and\ttab", id="spaces"),
        pytest.param("nul\x00byte", id="nul"),
        pytest.param("caf\u00e9-\u6f22\u5b57-\U0001f600", id="unicode"),
        pytest.param("../../etc/passwd", id="path-traversal"),
        pytest.param("%2F%00", id="already-percent-encoded"),
        pytest.param("$where", id="dollar"),
        pytest.param(" ", id="single-space"),
    ],
)
def test_ids_are_any_text(value: str) -> None:
    """Ids are percent-encoded where they go into subjects, so none of these is bad."""
    raw = orjson.dumps({"event_id": value, "blob_id": value, "user_id": value})
    checked = decode_event(raw, CREATED)
    assert checked.event_id == checked.blob_id == checked.user_id == value


def test_escaped_nul_in_json_is_accepted() -> None:
    checked = decode_event(b'{"event_id":"a\\u0000b","blob_id":"b","user_id":"u"}', CREATED)
    assert checked.event_id == "a\x00b"


def test_escaped_surrogate_pair_is_accepted() -> None:
    checked = decode_event(b'{"event_id":"\\ud83d\\ude00","blob_id":"b","user_id":"u"}', CREATED)
    assert checked.event_id == "\U0001f600"


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        pytest.param(b"9223372036854775807", 2**63 - 1, id="max-i64"),
        pytest.param(b"18446744073709551615", 2**64 - 1, id="max-u64"),
        pytest.param(b"-9223372036854775808", -(2**63), id="min-i64"),
        pytest.param(b"1e308", 1e308, id="big-float"),
        pytest.param(b"-0", 0, id="minus-zero"),
        pytest.param(b"5e-324", 5e-324, id="subnormal"),
    ],
)
def test_huge_numbers_in_content(literal: bytes, expected: float) -> None:
    raw = b'{"event_id":"e","blob_id":"b","user_id":"u","content":{"n":' + literal + b"}}"
    assert decode_event(raw, CREATED).data["content"] == {"n": expected}


@pytest.mark.parametrize(
    "literal",
    [
        pytest.param(b"18446744073709551616", id="u64-plus-one"),
        pytest.param(b"-9223372036854775809", id="i64-minus-one"),
        pytest.param(b"1" * 300, id="300-digits"),
    ],
)
def test_numbers_beyond_64_bits_are_accepted(literal: bytes) -> None:
    raw = b'{"event_id":"e","blob_id":"b","user_id":"u","content":' + literal + b"}"
    assert json_kind(decode_event(raw, CREATED).data["content"]) == "number"


def test_integer_beyond_the_double_range_is_valid_json() -> None:
    raw = b'{"event_id":"e","blob_id":"b","user_id":"u","content":' + b"1" * 400 + b"}"
    assert json_kind(decode_event(raw, CREATED).data["content"]) == "number"


@pytest.mark.parametrize(
    "literal",
    [
        pytest.param(b"18446744073709551617", id="u64-plus-two"),
        pytest.param(b"123456789012345678901234567890", id="30-digits"),
    ],
)
def test_numbers_beyond_64_bits_keep_their_value(literal: bytes) -> None:
    raw = b'{"event_id":"e","blob_id":"b","user_id":"u","content":' + literal + b"}"
    assert decode_event(raw, CREATED).data["content"] == int(literal)


def test_duplicate_keys_last_one_wins() -> None:
    # Pinned, not endorsed: parsers disagree on duplicate keys, and this is orjson's choice.
    raw = b'{"event_id":"e","blob_id":"b","user_id":"u","event_id":"f"}'
    assert decode_event(raw, CREATED).event_id == "f"


def test_event_under_the_default_limit_with_big_content() -> None:
    raw = event(content="x" * (MAX_EVENT_BYTES - 200))
    assert len(raw) <= MAX_EVENT_BYTES
    assert len(decode_event(raw, CREATED).data["content"]) == MAX_EVENT_BYTES - 200
