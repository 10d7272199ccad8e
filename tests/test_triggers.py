"""Trigger conditions and binding selection (CONTRACT §5.3), as tables."""

from __future__ import annotations

import random
from types import MappingProxyType
from typing import Any, get_args

import pytest

from blobflow.core.jsonvalues import MISSING
from blobflow.core.regexes import compile_linear
from blobflow.core.triggers import (
    OPERATORS,
    Binding,
    EventKind,
    Operator,
    Trigger,
    TriggerCondition,
    compile_condition,
    match_bindings,
)
from blobflow.errors import TriggerError

EVENT: dict[str, Any] = {
    "event_id": "e-1",
    "blob_id": "b-1",
    "user_id": "u-1",
    "metadata": {
        "type": "chapter",
        "title": "Chapter One",
        "count": 3,
        "ratio": 1.5,
        "one": 1,
        "one_float": 1.0,
        "one_str": "1",
        "flag": True,
        "nothing": None,
        "tags": ["a", "b", 1],
        "items": [{"name": "first"}, {"name": "second"}],
        "nested": {"deep": {"x": "y"}},
    },
    "content": "hello world",
}


def holds(field: str, operator: str, value: Any, kind: EventKind = "onCreate") -> bool:
    return compile_condition(field, operator, value).holds(EVENT, kind)


# (field, operator, value, expected); every operator gets a match, a miss, the
# JSON type traps (1/"1", true/1, 1/1.0, null), a missing field, a nested field
# and an array index.
OPERATOR_CASES: list[tuple[str, str, Any, bool]] = [
    ("metadata.type", "eq", "chapter", True),
    ("metadata.type", "eq", "verse", False),
    ("metadata.one", "eq", "1", False),
    ("metadata.one_str", "eq", 1, False),
    ("metadata.flag", "eq", 1, False),
    ("metadata.one", "eq", True, False),
    ("metadata.one", "eq", 1.0, True),
    ("metadata.one_float", "eq", 1, True),
    ("metadata.nothing", "eq", None, True),
    ("metadata.nothing", "eq", "null", False),
    ("metadata.absent", "eq", None, False),
    ("metadata.nested.deep.x", "eq", "y", True),
    ("metadata.items.1.name", "eq", "second", True),
    ("metadata.items.5.name", "eq", "second", False),
    ("metadata.tags", "eq", ["a", "b", 1.0], True),
    ("metadata.tags", "eq", ["a", "b", True], False),
    ("metadata.nested", "eq", {"deep": {"x": "y"}}, True),
    ("metadata.type", "ne", "chapter", False),
    ("metadata.type", "ne", "verse", True),
    ("metadata.one", "ne", "1", True),
    ("metadata.one", "ne", True, True),
    ("metadata.one", "ne", 1.0, False),
    ("metadata.nothing", "ne", None, False),
    ("metadata.absent", "ne", None, True),
    ("metadata.absent", "ne", "x", True),
    ("metadata.nested.deep.x", "ne", "y", False),
    ("metadata.items.0.name", "ne", "second", True),
    ("metadata.type", "in", ["verse", "chapter"], True),
    ("metadata.type", "in", ["verse"], False),
    ("metadata.type", "in", [], False),
    ("metadata.one", "in", ["1"], False),
    ("metadata.one", "in", [True], False),
    ("metadata.flag", "in", [1], False),
    ("metadata.one", "in", [1.0], True),
    ("metadata.nothing", "in", [None], True),
    ("metadata.absent", "in", [None], False),
    ("metadata.nested.deep.x", "in", ["y"], True),
    ("metadata.items.0.name", "in", ["first"], True),
    ("metadata.type", "not_in", ["verse", "chapter"], False),
    ("metadata.type", "not_in", ["verse"], True),
    ("metadata.type", "not_in", [], True),
    ("metadata.one", "not_in", ["1"], True),
    ("metadata.one", "not_in", [True], True),
    ("metadata.one", "not_in", [1.0], False),
    ("metadata.nothing", "not_in", [None], False),
    ("metadata.absent", "not_in", [None], True),
    ("metadata.items.0.name", "not_in", ["first"], False),
    ("content", "contains", "world", True),
    ("content", "contains", "planet", False),
    ("content", "contains", "", True),
    ("metadata.tags", "contains", "a", True),
    ("metadata.tags", "contains", "z", False),
    ("metadata.tags", "contains", 1.0, True),
    ("metadata.tags", "contains", "1", False),
    ("metadata.tags", "contains", True, False),
    ("metadata.tags", "contains", None, False),
    ("metadata.one_str", "contains", 1, False),
    ("metadata.count", "contains", 3, False),
    ("metadata.nested", "contains", "deep", False),
    ("metadata.nothing", "contains", None, False),
    ("metadata.absent", "contains", "a", False),
    ("metadata.nested.deep.x", "contains", "y", True),
    ("metadata.items.0.name", "contains", "irs", True),
    ("metadata.items", "contains", {"name": "first"}, True),
    ("metadata.count", "gt", 2, True),
    ("metadata.count", "gt", 3, False),
    ("metadata.count", "gt", 2.5, True),
    ("metadata.ratio", "gt", 1, True),
    ("metadata.one", "gt", "0", False),
    ("metadata.one_str", "gt", 0, False),
    ("metadata.one_str", "gt", "0", True),
    ("metadata.flag", "gt", 0, False),
    ("metadata.nothing", "gt", 0, False),
    ("metadata.absent", "gt", 0, False),
    ("metadata.count", "gte", 3, True),
    ("metadata.count", "gte", 3.0, True),
    ("metadata.count", "gte", 4, False),
    ("metadata.one", "gte", "1", False),
    ("metadata.flag", "gte", 1, False),
    ("metadata.absent", "gte", 0, False),
    ("metadata.items.0.name", "gte", "first", True),
    ("metadata.count", "lt", 4, True),
    ("metadata.count", "lt", 3, False),
    ("metadata.type", "lt", "d", True),
    ("metadata.type", "lt", "a", False),
    ("metadata.one_str", "lt", 2, False),
    ("metadata.nothing", "lt", 0, False),
    ("metadata.absent", "lt", 0, False),
    ("metadata.nested.deep.x", "lt", "z", True),
    ("metadata.count", "lte", 3, True),
    ("metadata.count", "lte", 2, False),
    ("metadata.one_float", "lte", 1, True),
    ("metadata.one", "lte", "1", False),
    ("metadata.flag", "lte", 1, False),
    ("metadata.absent", "lte", 0, False),
    ("metadata.items.1.name", "lte", "second", True),
    ("metadata.type", "matches", "^chap", True),
    ("metadata.type", "matches", "^verse", False),
    ("metadata.title", "matches", "One", True),
    ("metadata.title", "matches", "(?i)^chapter one$", True),
    ("metadata.title", "matches", "^One", False),
    ("metadata.one", "matches", "1", False),
    ("metadata.one_str", "matches", r"^\d$", True),
    ("metadata.flag", "matches", "True", False),
    ("metadata.nothing", "matches", ".*", False),
    ("metadata.absent", "matches", ".*", False),
    ("metadata.tags", "matches", "a", False),
    ("metadata.nested.deep.x", "matches", "^y$", True),
    ("metadata.items.0.name", "matches", "^f", True),
]


@pytest.mark.parametrize(("field", "operator", "value", "expected"), OPERATOR_CASES)
def test_operator(field: str, operator: str, value: Any, expected: bool) -> None:
    assert holds(field, operator, value) is expected


def test_operator_table_covers_every_value_operator() -> None:
    covered = {case[1] for case in OPERATOR_CASES}
    assert covered == OPERATORS - {"exists", "changed"}


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("metadata.type", MISSING, True),
        ("metadata.type", True, True),
        ("metadata.type", False, False),
        ("metadata.absent", MISSING, False),
        ("metadata.absent", True, False),
        ("metadata.absent", False, True),
        ("metadata.nothing", True, True),
        ("metadata.nothing", False, False),
        ("metadata.nested.deep.x", True, True),
        ("metadata.nested.deep.z", True, False),
        ("metadata.items.1", True, True),
        ("metadata.items.2", True, False),
        ("metadata.items.2", False, True),
        ("metadata.type.length", True, False),
        ("blob_id", True, True),
    ],
)
def test_exists(field: str, value: Any, expected: bool) -> None:
    assert holds(field, "exists", value) is expected


UPDATED: dict[str, Any] = {
    "event_id": "e-2",
    "blob_id": "b-1",
    "user_id": "u-1",
    "metadata": {"status": "final", "type": "chapter", "tags": ["a"], "gone": None},
    "content": {"text": "new"},
}


@pytest.mark.parametrize(
    ("field", "previous", "kind", "expected"),
    [
        ("metadata.status", {"metadata": {"status": "draft"}}, "onUpdate", True),
        ("metadata.status", {"metadata": {"status": "final"}}, "onUpdate", False),
        ("metadata.status", {"metadata": {"status": "draft"}}, "onCreate", False),
        ("metadata.status", {"metadata": {}}, "onUpdate", True),
        ("metadata.status", {}, "onUpdate", True),
        ("metadata.status", MISSING, "onUpdate", True),
        ("metadata.status", None, "onUpdate", True),
        ("metadata.status", "not an object", "onUpdate", True),
        ("metadata.absent", {"metadata": {"absent": 1}}, "onUpdate", True),
        ("metadata.absent", {"metadata": {}}, "onUpdate", False),
        ("metadata.absent", MISSING, "onUpdate", False),
        ("metadata.gone", {"metadata": {}}, "onUpdate", True),
        ("metadata.gone", {"metadata": {"gone": None}}, "onUpdate", False),
        ("metadata.gone", {"metadata": {"gone": 0}}, "onUpdate", True),
        ("metadata.tags", {"metadata": {"tags": ["a"]}}, "onUpdate", False),
        ("metadata.tags", {"metadata": {"tags": ["a", "b"]}}, "onUpdate", True),
        ("metadata.tags.0", {"metadata": {"tags": ["b"]}}, "onUpdate", True),
        ("content.text", {"content": {"text": "old"}}, "onUpdate", True),
        ("content.text", {"content": {"text": "new"}}, "onUpdate", False),
        ("content", {"content": {"text": "new"}}, "onUpdate", False),
    ],
)
def test_changed(field: str, previous: Any, kind: EventKind, expected: bool) -> None:
    event = dict(UPDATED) if previous is MISSING else {**UPDATED, "previous": previous}
    assert compile_condition(field, "changed").holds(event, kind) is expected


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [(1, 1.0, False), (1, True, True), (1, "1", True), (0, None, True), (None, False, True)],
)
def test_changed_is_type_strict(old: Any, new: Any, expected: bool) -> None:
    event = {"metadata": {"v": new}, "previous": {"metadata": {"v": old}}}
    assert compile_condition("metadata.v", "changed").holds(event, "onUpdate") is expected


@pytest.mark.parametrize(
    ("field", "operator", "value", "expected"),
    [
        ("metadata.type", "eq", "chapter", TriggerCondition(("metadata", "type"), "eq", "chapter")),
        ("a", "eq", None, TriggerCondition(("a",), "eq", None)),
        ("a", "ne", None, TriggerCondition(("a",), "ne", None)),
        ("a", "contains", None, TriggerCondition(("a",), "contains", None)),
        ("a.0.b", "in", [1, "x"], TriggerCondition(("a", "0", "b"), "in", (1, "x"))),
        ("a", "not_in", [], TriggerCondition(("a",), "not_in", ())),
        ("a", "gt", 1.5, TriggerCondition(("a",), "gt", 1.5)),
        ("a", "lte", "m", TriggerCondition(("a",), "lte", "m")),
        ("a", "exists", MISSING, TriggerCondition(("a",), "exists", True)),
        ("a", "exists", False, TriggerCondition(("a",), "exists", False)),
        ("content", "changed", MISSING, TriggerCondition(("content",), "changed", None)),
        ("a", "matches", "^x", TriggerCondition(("a",), "matches", "^x", compile_linear("^x"))),
    ],
)
def test_compile_normalizes(field: str, operator: str, value: Any, expected: Any) -> None:
    assert compile_condition(field, operator, value) == expected


def test_operators_constant_lists_the_literal() -> None:
    assert frozenset(get_args(Operator)) == OPERATORS
    assert len(OPERATORS) == 12


@pytest.mark.parametrize(
    ("field", "operator", "value", "part", "message"),
    [
        ("", "eq", 1, "field", "non-empty"),
        (None, "eq", 1, "field", "non-empty"),
        (5, "eq", 1, "field", "non-empty"),
        ("a..b", "eq", 1, "field", "'a..b' has an empty segment"),
        (".a", "eq", 1, "field", "empty segment"),
        ("a.", "eq", 1, "field", "empty segment"),
        (".", "exists", MISSING, "field", "empty segment"),
        ("", "bogus", 1, "field", "non-empty"),
        ("a", "equals", 1, "operator", "unknown operator 'equals' (did you mean 'eq'?)"),
        ("a", "EQ", 1, "operator", "(did you mean 'eq'?)"),
        ("a", "==", 1, "operator", "(did you mean 'eq'?)"),
        ("a", ">=", 1, "operator", "(did you mean 'gte'?)"),
        ("a", "regex", "x", "operator", "(did you mean 'matches'?)"),
        ("a", "notin", [], "operator", "(did you mean 'not_in'?)"),
        ("a", "xyzzy", 1, "operator", "'xyzzy'; expected one of changed, contains"),
        ("a", "", 1, "operator", "unknown operator ''"),
        ("a", None, 1, "operator", "operator must be a string"),
        ("a", "eq", MISSING, "value", "operator 'eq' needs a value"),
        ("a", "ne", MISSING, "value", "operator 'ne' needs a value"),
        ("a", "contains", MISSING, "value", "operator 'contains' needs a value"),
        ("a", "in", MISSING, "value", "operator 'in' needs a value"),
        ("a", "in", "a", "value", "operator 'in' needs an array value, got string"),
        ("a", "in", None, "value", "needs an array value, got null"),
        ("a", "not_in", {"a": 1}, "value", "operator 'not_in' needs an array value, got object"),
        ("a", "gt", MISSING, "value", "operator 'gt' needs a value"),
        ("a", "gt", True, "value", "operator 'gt' needs a number or a string value, got boolean"),
        ("a", "gte", None, "value", "got null"),
        ("a", "lt", [1], "value", "got array"),
        ("a", "lte", {"n": 1}, "value", "got object"),
        ("a", "matches", MISSING, "value", "operator 'matches' needs a value"),
        ("a", "matches", 1, "value", "needs a string value (a regular expression), got number"),
        ("a", "matches", "(", "value", "invalid regular expression '(': missing ): ("),
        ("a", "matches", "a{2,1}", "value", "invalid repetition size: {2,1}"),
        ("a", "matches", r"(a)\1", "value", r"invalid escape sequence: \1 (RE2 has no backrefer"),
        ("a", "exists", "yes", "value", "operator 'exists' takes true or false, got string"),
        ("a", "exists", 1, "value", "takes true or false, got number"),
        ("a", "exists", None, "value", "takes true or false, got null"),
        ("content", "changed", True, "value", "operator 'changed' takes no value"),
        ("blob_id", "changed", MISSING, "field", "works on metadata and content fields only"),
        ("a", "changed", None, "value", "operator 'changed' takes no value"),
        ("a", "eq", object(), "value", "is not a JSON value"),
        ("a", "eq", {1: "a"}, "value", "is not a JSON value"),
        ("a", "eq", float("nan"), "value", "is not a JSON value"),
        ("a", "gt", float("inf"), "value", "is not a JSON value"),
        ("a", "in", [{"x"}], "value", "is not a JSON value"),
        ("a", "changed", b"x", "value", "is not a JSON value"),
    ],
)
def test_compile_errors(field: Any, operator: Any, value: Any, part: str, message: str) -> None:
    with pytest.raises(TriggerError) as raised:
        compile_condition(field, operator, value)
    assert raised.value.part == part
    assert message in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_unknown_operator_lists_every_valid_one() -> None:
    with pytest.raises(TriggerError, match="unknown operator") as raised:
        compile_condition("a", "equals", 1)
    assert all(op in str(raised.value) for op in OPERATORS)


def test_condition_reads_any_mapping() -> None:
    event = MappingProxyType({"metadata": {"type": "chapter"}})
    assert compile_condition("metadata.type", "eq", "chapter").holds(event, "onCreate")


def test_compiled_condition_keeps_no_reference_to_the_yaml_list() -> None:
    options = ["chapter"]
    condition = compile_condition("metadata.type", "in", options)
    options.clear()
    assert condition.holds(EVENT, "onCreate")


def when(kind: EventKind, *conditions: tuple[str, str, Any]) -> Trigger:
    return Trigger(kind, tuple(compile_condition(*c) for c in conditions))


def bind(
    provider: str = "p",
    workflow: str = "w",
    priority: int = 0,
    order: int = 0,
    triggers: tuple[Trigger, ...] = (when("onCreate"),),
) -> Binding:
    return Binding(provider, workflow, priority, {}, triggers, order)


COUNT_ABOVE_1 = ("metadata.count", "gt", 1)
COUNT_ABOVE_5 = ("metadata.count", "gt", 5)


@pytest.mark.parametrize(
    ("trigger", "kind", "expected"),
    [
        (when("onCreate"), "onCreate", True),
        (when("onCreate"), "onUpdate", False),
        (when("onUpdate"), "onUpdate", True),
        (when("onCreate", ("metadata.type", "eq", "chapter")), "onCreate", True),
        (when("onCreate", ("metadata.type", "eq", "chapter"), COUNT_ABOVE_5), "onCreate", False),
        (when("onCreate", ("metadata.type", "eq", "chapter"), COUNT_ABOVE_1), "onCreate", True),
        (when("onUpdate", ("metadata.type", "eq", "chapter")), "onCreate", False),
    ],
)  # fmt: skip
def test_trigger_needs_kind_and_every_condition(
    trigger: Trigger, kind: EventKind, expected: bool
) -> None:
    assert trigger.matches(EVENT, kind) is expected


@pytest.mark.parametrize(
    ("provider_ids", "expected"),
    [
        (MISSING, True),
        (None, True),
        (["p"], True),
        (["other", "p"], True),
        (["other"], False),
        ([], False),
        ("p", False),
        ({"p": True}, False),
        (1, False),
    ],
)
def test_provider_eligibility(provider_ids: Any, expected: bool) -> None:
    event = dict(EVENT) if provider_ids is MISSING else {**EVENT, "provider_ids": provider_ids}
    binding = bind()
    assert match_bindings(event, "onCreate", [binding], {"w"}) == ([binding] if expected else [])


@pytest.mark.parametrize(
    ("active", "expected"),
    [({"w"}, True), (set(), False), ({"other"}, False), (frozenset({"w", "x"}), True)],
)
def test_only_active_workflows_match(active: set[str], expected: bool) -> None:
    binding = bind()
    assert match_bindings(EVENT, "onCreate", [binding], active) == ([binding] if expected else [])


def test_ordering_priority_then_provider_then_order() -> None:
    expected = [
        bind("b", "w1", priority=10, order=1),
        bind("a", "w2", priority=5, order=3),
        bind("b", "w3", priority=5, order=0),
        bind("b", "w4", priority=5, order=2),
        bind("a", "w5", priority=0, order=0),
        bind("a", "w6", priority=-1, order=0),
    ]
    active = {b.workflow_id for b in expected}
    for seed in range(5):
        shuffled = expected[:]
        random.Random(seed).shuffle(shuffled)
        assert match_bindings(EVENT, "onCreate", shuffled, active) == expected


def test_full_ties_keep_input_order() -> None:
    first, second = bind(workflow="w1"), bind(workflow="w2")
    assert match_bindings(EVENT, "onCreate", [second, first], {"w1", "w2"}) == [second, first]


def test_a_binding_matched_by_two_triggers_appears_once() -> None:
    chapter = when("onCreate", ("metadata.type", "eq", "chapter"))
    binding = bind(triggers=(when("onCreate"), chapter))
    assert match_bindings(EVENT, "onCreate", iter([binding]), {"w"}) == [binding]


BOOK_WRITER = Binding(
    provider_id="book-writer",
    workflow_id="book_chapter_processing",
    priority=10,
    input={"style": "noir"},
    triggers=(
        when("onCreate", ("metadata.type", "eq", "chapter")),
        when("onUpdate", ("metadata.status", "eq", "draft")),
    ),
)
OTHER = bind("other-provider", "summarise", priority=0)


@pytest.mark.parametrize(
    ("kind", "metadata", "provider_ids", "expected"),
    [
        ("onCreate", {"type": "chapter"}, MISSING, [BOOK_WRITER, OTHER]),
        ("onCreate", {"type": "chapter"}, ["book-writer"], [BOOK_WRITER]),
        ("onCreate", {"type": "chapter"}, ["other-provider"], [OTHER]),
        ("onCreate", {"type": "note"}, MISSING, [OTHER]),
        ("onCreate", {"type": "chapter", "status": "draft"}, MISSING, [BOOK_WRITER, OTHER]),
        ("onCreate", {"type": "note", "status": "draft"}, MISSING, [OTHER]),
        ("onUpdate", {"type": "chapter", "status": "draft"}, MISSING, [BOOK_WRITER]),
        ("onUpdate", {"type": "chapter", "status": "final"}, MISSING, []),
        ("onUpdate", {"type": "note", "status": "draft"}, ["book-writer"], [BOOK_WRITER]),
        ("onUpdate", {"status": "Draft"}, MISSING, []),
        ("onUpdate", {}, MISSING, []),
    ],
)
def test_book_writer_example(
    kind: EventKind, metadata: dict[str, Any], provider_ids: Any, expected: list[Binding]
) -> None:
    event: dict[str, Any] = {"event_id": "e", "blob_id": "b", "user_id": "u", "metadata": metadata}
    if provider_ids is not MISSING:
        event["provider_ids"] = provider_ids
    active = {"book_chapter_processing", "summarise"}
    assert match_bindings(event, kind, [OTHER, BOOK_WRITER], active) == expected
