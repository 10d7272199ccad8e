"""Deltas derived from a workflow output: order, defaults, and every problem reported at once."""

from __future__ import annotations

from typing import Any

import pytest

from blobflow.core.deltas import MAX_DELTAS, DeltaDraft, derive_deltas
from blobflow.errors import BlobflowError, DeltaError

OLD = {"text": "before"}


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        pytest.param(None, [], id="null-output"),
        pytest.param([{"op": "x"}], [], id="list-output"),
        pytest.param("text", [], id="string-output"),
        pytest.param({}, [], id="empty-object"),
        pytest.param({"summary": "s"}, [], id="no-delta-keys"),
        pytest.param(
            {"delta_operations": None, "deltas": None, "created_blobs": None},
            [],
            id="nulls-are-absent",
        ),
        pytest.param({"delta_operations": [], "created_blobs": []}, [], id="empty-lists"),
        pytest.param(
            {"delta_operations": [{"op": "set", "path": "/a", "value": 1, "old_value": 0}]},
            [DeltaDraft("set", "/a", 1, 0)],
            id="full-operation",
        ),
        pytest.param(
            {"deltas": [{"type": "tag"}]},
            [DeltaDraft("tag", "", None, None)],
            id="type-and-defaults",
        ),
        pytest.param(
            {"deltas": [{"op": "a", "type": "b"}]},
            [DeltaDraft("a", "", None, None)],
            id="op-wins-over-type",
        ),
        pytest.param(
            {"deltas": [{"op": None, "type": "b", "path": None}]},
            [DeltaDraft("b", "", None, None)],
            id="null-op-and-path-are-absent",
        ),
        pytest.param(
            {"deltas": [{"op": "set", "value": None, "extra": 1}]},
            [DeltaDraft("set", "", None, None)],
            id="extra-keys-ignored",
        ),
        pytest.param(
            {"transformed_content": "after"},
            [DeltaDraft("transform", "/content", "after", OLD)],
            id="transformed-content",
        ),
        pytest.param(
            {"transformed_content": None},
            [DeltaDraft("transform", "/content", None, OLD)],
            id="transformed-content-null-is-present",
        ),
        pytest.param(
            {"created_blobs": [{"title": "a"}, "b", None]},
            [
                DeltaDraft("create_derived", "/derived", {"title": "a"}, None),
                DeltaDraft("create_derived", "/derived", "b", None),
                DeltaDraft("create_derived", "/derived", None, None),
            ],
            id="created-blobs-any-item",
        ),
        pytest.param(
            # Key order in the output does not matter: §8 fixes the order.
            {
                "created_blobs": [{"id": "c"}],
                "transformed_content": "t",
                "deltas": [{"op": "d"}],
                "delta_operations": [{"op": "o1"}, {"op": "o2"}],
            },
            [
                DeltaDraft("o1", "", None, None),
                DeltaDraft("o2", "", None, None),
                DeltaDraft("d", "", None, None),
                DeltaDraft("transform", "/content", "t", OLD),
                DeltaDraft("create_derived", "/derived", {"id": "c"}, None),
            ],
            id="section-8-order",
        ),
    ],
)
def test_derive_deltas(output: Any, expected: list[DeltaDraft]) -> None:
    assert derive_deltas(output, OLD) == expected


def test_old_content_defaults_to_none() -> None:
    assert derive_deltas({"transformed_content": 1}) == [
        DeltaDraft("transform", "/content", 1, None)
    ]


@pytest.mark.parametrize(
    ("output", "problems"),
    [
        pytest.param(
            {"delta_operations": {"op": "x"}},
            ["output.delta_operations: must be a list, not an object"],
            id="operations-not-a-list",
        ),
        pytest.param(
            {"created_blobs": "x"},
            ["output.created_blobs: must be a list, not a string"],
            id="created-blobs-not-a-list",
        ),
        pytest.param(
            {"deltas": [1]}, ["output.deltas[0]: must be an object, not a number"], id="item-number"
        ),
        pytest.param(
            {"deltas": [{"path": "/a"}]},
            ["output.deltas[0]: needs a non-empty 'op' or 'type'"],
            id="no-op-or-type",
        ),
        pytest.param(
            {"deltas": [{"op": ""}]},
            ["output.deltas[0]: needs a non-empty 'op' or 'type' ('op' is an empty string)"],
            id="empty-op",
        ),
        pytest.param(
            {"deltas": [{"op": 5, "type": "b"}]},
            ["output.deltas[0]: needs a non-empty 'op' or 'type' ('op' is a number)"],
            id="bad-op-is-not-replaced-by-type",
        ),
        pytest.param(
            {"deltas": [{"type": ["x"]}]},
            ["output.deltas[0]: needs a non-empty 'op' or 'type' ('type' is an array)"],
            id="bad-type",
        ),
        pytest.param(
            {"deltas": [{"op": "set", "path": 3}]},
            ["output.deltas[0].path: must be a string, not a number"],
            id="bad-path",
        ),
        pytest.param(
            {
                "delta_operations": [{"op": "ok"}, {"op": "ok"}, {}],
                "deltas": "nope",
                "transformed_content": "fine",
                "created_blobs": {"a": 1},
            },
            [
                "output.delta_operations[2]: needs a non-empty 'op' or 'type'",
                "output.deltas: must be a list, not a string",
                "output.created_blobs: must be a list, not an object",
            ],
            id="every-problem-at-once",
        ),
        pytest.param(
            {"deltas": [{"path": False}]},
            [
                "output.deltas[0]: needs a non-empty 'op' or 'type'",
                "output.deltas[0].path: must be a string, not a boolean",
            ],
            id="two-problems-in-one-item",
        ),
    ],
)
def test_derive_deltas_problems(output: Any, problems: list[str]) -> None:
    with pytest.raises(DeltaError) as caught:
        derive_deltas(output)
    assert caught.value.problems == tuple(problems)
    assert str(caught.value) == "\n".join(problems)


def test_delta_error_family() -> None:
    assert issubclass(DeltaError, BlobflowError)
    assert issubclass(DeltaError, ValueError)


@pytest.mark.parametrize(
    ("output", "allowed"),
    [
        pytest.param({"created_blobs": [1] * MAX_DELTAS}, True, id="exactly-cap"),
        pytest.param({"created_blobs": [1] * (MAX_DELTAS + 1)}, False, id="one-over"),
        pytest.param(
            {"deltas": [{"op": "x"}] * MAX_DELTAS, "transformed_content": 1},
            False,
            id="transform-tips-over",
        ),
        pytest.param(
            {"delta_operations": [{"op": "x"}] * 6000, "deltas": [{"op": "x"}] * 6000},
            False,
            id="counted-across-lists",
        ),
    ],
)
def test_cap(output: dict[str, Any], allowed: bool) -> None:
    if allowed:
        assert len(derive_deltas(output)) == MAX_DELTAS
    else:
        with pytest.raises(DeltaError, match=f"more than the limit of {MAX_DELTAS}"):
            derive_deltas(output)


def test_long_problem_lists_are_shortened_in_the_message() -> None:
    with pytest.raises(DeltaError) as caught:
        derive_deltas({"deltas": [None] * 50})
    assert len(caught.value.problems) == 50
    lines = str(caught.value).splitlines()
    assert len(lines) == DeltaError.MAX_LISTED + 1
    assert lines[-1] == f"... and {50 - DeltaError.MAX_LISTED} more problems"
