"""What the database can store (core.storable): hostile values and their outcome."""

from __future__ import annotations

from typing import Any

import pytest

from blobflow.core.jsonvalues import loads
from blobflow.core.storable import MAX_DEPTH, storable_text, unstorable_reason


def nested(levels: int, make: Any = dict) -> Any:
    value: Any = make()
    for _ in range(levels - 1):
        value = {"x": value} if make is dict else [value]
    return value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        # Legitimate data: stored and processed as it is.
        ({"$set": 1, "a.b": 2, "$": {"$in": [1]}}, None),
        ({"n": 2**63 - 1, "m": -(2**63)}, None),
        ({"n": 2**63, "m": [-(2**63) - 1], "big": 2**200}, None),  # the store's to refuse
        ({"items": list(range(100_000))}, None),
        ({"text": "ünïcödé ✓ 𝄞", "digits": "12345678901234567890123"}, None),
        ({"brackets": "[[[[{{{{" * 50, "quote": '"\\"[{'}, None),
        (nested(MAX_DEPTH), None),
        (nested(MAX_DEPTH, list), None),
        (loads(b'{"pair": "\\ud83d\\ude00"}'), None),  # a pair of escapes is one character
        ("plain", None),
        (None, None),
        # Unstorable: bad input.
        ({"a": [1, {"b": "\ud800"}]}, "a string holds a lone surrogate"),
        ({"\udc00key": 1}, "a key ('?key') holds a NUL byte or a lone surrogate at $"),
        ({"a": {"x\x00y": 1}}, "a key ('x\\x00y') holds a NUL byte or a lone surrogate at $.a"),
        (nested(MAX_DEPTH + 1), f"nested deeper than {MAX_DEPTH} levels at $.x"),
        (nested(MAX_DEPTH + 1, list), f"nested deeper than {MAX_DEPTH} levels at $"),
        ({"n": 2**70, "s": "\ud800"}, "a string holds a lone surrogate"),
    ],
    ids=lambda case: repr(case)[:40] if not isinstance(case, str) else case[:30],
)
def test_storability(value: Any, problem: str | None) -> None:
    reason = unstorable_reason(value)
    if problem is None:
        assert reason is None
    else:
        assert reason is not None
        assert reason.startswith(problem), reason


def test_the_reason_names_the_path_of_a_lone_surrogate() -> None:
    event = loads(b'{"metadata": {"tags": ["ok", "\\ud800"]}, "n": 1234567890123456789}')
    assert unstorable_reason(event) == (
        "a string holds a lone surrogate (a \\ud800-\\udfff escape without its pair) "
        "at $.metadata.tags[1]"
    )


@pytest.mark.parametrize(
    "value",
    [
        {"a": [0] * 500_000},
        {"a": [{} for _ in range(300_000)]},
        {"a": ["é"] * 250_000},
        {"a": [nested(80, list) for _ in range(2_000)]},
    ],
    ids=["ints", "objects", "strings", "deep-and-wide"],
)
def test_a_mebibyte_of_hostile_shape_is_storable(value: Any) -> None:
    # The shapes that cost the check most (30-70 ms a MiB measured; docs/events.md).
    assert unstorable_reason(value) is None


def test_text_for_messages_loses_lone_surrogates_only() -> None:
    assert storable_text("ok ✓") == "ok ✓"
    assert storable_text("bad \ud800 end") == "bad ? end"
