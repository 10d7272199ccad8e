"""JSON values: kind, type-strict equality and ordering, path lookup, compact text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from blobflow.core.jsonvalues import (
    MISSING,
    JsonKind,
    compact_json,
    compare,
    kind,
    lookup,
    strict_equal,
)

BIG = 2**70  # beyond 64 bits: orjson cannot write it

# ---------------------------------------------------------------- kind


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, "null", id="none"),
        pytest.param(True, "boolean", id="true"),
        pytest.param(False, "boolean", id="false"),
        pytest.param(0, "number", id="zero"),
        pytest.param(-1.5, "number", id="float"),
        pytest.param(BIG, "number", id="big-int"),
        pytest.param("", "string", id="empty-string"),
        pytest.param("\u00e9\U0001f600", "string", id="unicode"),
        pytest.param([], "array", id="list"),
        pytest.param((1, 2), "array", id="tuple"),
        pytest.param({}, "object", id="dict"),
        pytest.param({"a": [1]}, "object", id="nested-dict"),
        pytest.param(b"x", None, id="bytes"),
        pytest.param({1, 2}, None, id="set"),
        pytest.param(object(), None, id="object"),
        pytest.param(MISSING, None, id="missing"),
    ],
)
def test_kind(value: Any, expected: JsonKind | None) -> None:
    assert kind(value) == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_kind_of_non_finite_float_is_none(value: float) -> None:
    assert kind(value) is None


# ---------------------------------------------------------------- strict_equal


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param(True, 1, False, id="true-vs-1"),
        pytest.param(False, 0, False, id="false-vs-0"),
        pytest.param(1, True, False, id="1-vs-true"),
        pytest.param(True, True, True, id="true-vs-true"),
        pytest.param(1, 1.0, True, id="1-vs-1.0"),
        pytest.param(0, -0.0, True, id="0-vs-minus-0.0"),
        pytest.param(1, "1", False, id="1-vs-string"),
        pytest.param(None, None, True, id="null-vs-null"),
        pytest.param(None, 0, False, id="null-vs-0"),
        pytest.param(None, MISSING, False, id="null-vs-missing"),
        pytest.param(MISSING, MISSING, False, id="missing-is-not-a-value"),
        pytest.param("", None, False, id="empty-string-vs-null"),
        pytest.param([], {}, False, id="empty-array-vs-object"),
        pytest.param([1, 2], [1, 2], True, id="arrays"),
        pytest.param([1, 2], [2, 1], False, id="array-order-matters"),
        pytest.param([1, 2], [1, 2, 3], False, id="array-lengths"),
        pytest.param([1], [1.0], True, id="array-of-int-vs-float"),
        pytest.param([True], [1], False, id="array-of-true-vs-1"),
        pytest.param((1, [2]), [1, (2,)], True, id="tuples-are-arrays"),
        pytest.param([[1, [2, [3]]]], [[1, [2, [3.0]]]], True, id="deep-arrays"),
        pytest.param([[1, [2, [3]]]], [[1, [2, [True]]]], False, id="deep-arrays-bool"),
        pytest.param({"a": 1, "b": 2}, {"b": 2, "a": 1.0}, True, id="key-order-irrelevant"),
        pytest.param({"a": 1}, {"a": 1, "b": None}, False, id="extra-null-key"),
        pytest.param({"a": 1}, {"b": 1}, False, id="different-keys"),
        pytest.param({"a": {"b": [1]}}, {"a": {"b": [1.0]}}, True, id="nested-objects"),
        pytest.param({"a": {"b": [1]}}, {"a": {"b": [True]}}, False, id="nested-objects-bool"),
        pytest.param({"a": 1}, [("a", 1)], False, id="object-vs-pairs"),
        pytest.param(BIG, BIG, True, id="big-ints"),
        pytest.param(BIG, BIG + 1, False, id="big-ints-differ"),
        pytest.param(2**53 + 1, float(2**53), False, id="exact-beyond-float-precision"),
        pytest.param("\u00e9", "e\u0301", False, id="no-unicode-normalisation"),
        pytest.param("\U0001f600", "\U0001f600", True, id="emoji"),
        pytest.param(b"x", b"x", False, id="bytes-are-not-json"),
        pytest.param(float("nan"), float("nan"), False, id="nan"),
    ],
)
def test_strict_equal(a: Any, b: Any, expected: bool) -> None:
    assert strict_equal(a, b) is expected
    assert strict_equal(b, a) is expected


# ---------------------------------------------------------------- compare


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param(1, 2, -1, id="int-less"),
        pytest.param(2, 1, 1, id="int-greater"),
        pytest.param(1, 1.0, 0, id="int-float-equal"),
        pytest.param(-0.5, 0, -1, id="negative-float"),
        pytest.param(BIG, 1e21, 1, id="big-int-vs-float"),
        pytest.param(2**53 + 1, float(2**53), 1, id="exact-beyond-float-precision"),
        pytest.param("a", "b", -1, id="strings"),
        pytest.param("b", "a", 1, id="strings-reversed"),
        pytest.param("a", "a", 0, id="strings-equal"),
        pytest.param("B", "a", -1, id="code-point-order"),
        pytest.param("z", "\u00e9", -1, id="accented-after-ascii"),
        pytest.param("", "a", -1, id="empty-string-first"),
        pytest.param("10", "9", -1, id="numeric-strings-are-text"),
        pytest.param(1, "1", None, id="number-vs-string"),
        pytest.param("1", 1, None, id="string-vs-number"),
        pytest.param(True, False, None, id="booleans"),
        pytest.param(True, 0, None, id="bool-is-not-a-number"),
        pytest.param(1, True, None, id="number-vs-bool"),
        pytest.param(None, None, None, id="nulls"),
        pytest.param(None, 1, None, id="null-vs-number"),
        pytest.param([1], [2], None, id="arrays"),
        pytest.param({}, {}, None, id="objects"),
        pytest.param(MISSING, 1, None, id="missing"),
    ],
)
def test_compare(a: Any, b: Any, expected: int | None) -> None:
    assert compare(a, b) == expected
    reverse = None if expected is None else -expected
    assert compare(b, a) == reverse


# ---------------------------------------------------------------- lookup

DOC: dict[str, Any] = {
    "a": {"b": {"c": 1}},
    "items": [{"name": "first"}, {"name": "second"}],
    "tuple": ("x", "y"),
    "nothing": None,
    "flag": False,
    "zero": 0,
    "text": "hello",
    "0": "key that looks like an index",
    "a.b": "dotted key",
    "$where": "hostile key",
    "\u00e9\U0001f600": "unicode key",
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param([], DOC, id="empty-path"),
        pytest.param(["a"], {"b": {"c": 1}}, id="one-level"),
        pytest.param(["a", "b", "c"], 1, id="nested-dicts"),
        pytest.param(["items", 0, "name"], "first", id="int-index"),
        pytest.param(["items", "1", "name"], "second", id="digit-string-index"),
        pytest.param(["items", "01", "name"], "second", id="leading-zero-digits"),
        pytest.param(["tuple", 1], "y", id="tuple-index"),
        pytest.param(["tuple", "0"], "x", id="tuple-digit-string"),
        pytest.param(["nothing"], None, id="explicit-null"),
        pytest.param(["flag"], False, id="explicit-false"),
        pytest.param(["zero"], 0, id="explicit-zero"),
        pytest.param(["0"], "key that looks like an index", id="digit-key-on-dict"),
        pytest.param(["a.b"], "dotted key", id="dotted-key"),
        pytest.param(["$where"], "hostile key", id="dollar-key"),
        pytest.param(["\u00e9\U0001f600"], "unicode key", id="unicode-key"),
    ],
)
def test_lookup_finds(path: Sequence[str | int], expected: Any) -> None:
    assert lookup(DOC, path) == expected


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(["missing"], id="missing-key"),
        pytest.param(["a", "missing"], id="missing-nested-key"),
        pytest.param(["a", "b", "c", "d"], id="below-a-number"),
        pytest.param(["text", "0"], id="strings-are-not-indexed"),
        pytest.param(["text", 0], id="strings-are-not-indexed-by-int"),
        pytest.param(["nothing", "x"], id="below-null"),
        pytest.param(["flag", "x"], id="below-bool"),
        pytest.param(["items", 2], id="out-of-range"),
        pytest.param(["items", "2"], id="out-of-range-string"),
        pytest.param(["items", -1], id="negative-int"),
        pytest.param(["items", "-1"], id="negative-string"),
        pytest.param(["items", "1.0"], id="float-string"),
        pytest.param(["items", " 1"], id="padded-string"),
        pytest.param(["items", ""], id="empty-string"),
        pytest.param(["items", "\u0661"], id="non-ascii-digit"),
        pytest.param(["items", "\u00b2"], id="superscript-two"),
        pytest.param(["items", "name"], id="name-on-array"),
        pytest.param(["items", "99999999999999999999999"], id="huge-index"),
        pytest.param([0], id="int-on-dict"),
        pytest.param(["__class__"], id="dunder-class"),
        pytest.param(["a", "__class__"], id="nested-dunder-class"),
        pytest.param(["items", "__len__"], id="dunder-on-list"),
        pytest.param(["text", "__class__"], id="dunder-on-string"),
        pytest.param(["keys"], id="dict-method-name"),
        pytest.param(["a", "b", "c", "real"], id="int-attribute"),
    ],
)
def test_lookup_misses(path: Sequence[str | int]) -> None:
    assert lookup(DOC, path) is MISSING


@pytest.mark.parametrize(
    "value",
    [None, 1, "text", True, 1.5, b"bytes", object()],
    ids=["null", "int", "str", "bool", "float", "bytes", "object"],
)
def test_lookup_into_non_containers_is_missing(value: Any) -> None:
    assert lookup(value, ["x"]) is MISSING
    assert lookup(value, [0]) is MISSING
    assert lookup(value, []) is value


def test_lookup_with_an_index_beyond_the_int_digit_limit_is_missing() -> None:
    assert lookup([1, 2], ["9" * 5000]) is MISSING


def test_missing_is_a_falsy_singleton() -> None:
    assert MISSING is type(MISSING)()
    assert not MISSING
    assert repr(MISSING) == "MISSING"
    assert MISSING is not None


# ---------------------------------------------------------------- compact_json


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param({"a": 1, "b": [True, None]}, '{"a":1,"b":[true,null]}', id="compact"),
        pytest.param({"b": 1, "a": 2}, '{"b":1,"a":2}', id="keeps-key-order"),
        pytest.param("text", '"text"', id="string"),
        pytest.param("\u00e9\u6f22\U0001f600", '"\u00e9\u6f22\U0001f600"', id="unicode-unescaped"),
        pytest.param('quote " and \\', '"quote \\" and \\\\"', id="escapes"),
        pytest.param("\x00\n", '"\\u0000\\n"', id="control-chars"),
        pytest.param((1, (2,)), "[1,[2]]", id="tuples"),
        pytest.param(1.5, "1.5", id="float"),
        pytest.param(2**63 - 1, str(2**63 - 1), id="max-i64"),
        pytest.param(2**64 - 1, str(2**64 - 1), id="max-u64"),
        pytest.param(-(2**63), str(-(2**63)), id="min-i64"),
        pytest.param(2**64, str(2**64), id="u64-plus-one"),
        pytest.param(-(2**63) - 1, str(-(2**63) - 1), id="i64-minus-one"),
        pytest.param(BIG, str(BIG), id="big-int"),
        pytest.param({"n": [BIG, "\u00e9"]}, f'{{"n":[{BIG},"\u00e9"]}}', id="nested-big-int"),
    ],
)
def test_compact_json(value: Any, expected: str) -> None:
    text = compact_json(value)
    assert text == expected
    assert strict_equal(json.loads(text), value)


def test_compact_json_of_something_json_cannot_hold_raises() -> None:
    with pytest.raises(TypeError):
        compact_json({"a": object()})
