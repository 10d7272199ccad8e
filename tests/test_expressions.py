"""The expression language: references, templates, compiled values and conditions."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from blobflow.core.conditions import Condition, parse_condition
from blobflow.core.expressions import (
    ListValue,
    Literal,
    MapValue,
    Reference,
    Template,
    compile_value,
    parse_reference,
)
from blobflow.errors import ExpressionError, PathPart

ROOT: dict[str, Any] = {
    "input": {
        "blob_id": "b-1",
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "nothing": None,
        "tags": ["a", "b", {"deep": [10, 20]}],
        "meta": {"lang": "de", "pages": 12},
        "名前": "ユキ",
        "content-type": "text/plain",
        "dotted.key": "dot",
        "with space": "space",
        "it's": "quote",
        "0": "zero-key",
    },
    "steps": {"ocr": {"output": {"text": "Grüße\nWelt", "words": 2}, "status": "completed"}},
    "execution": {"id": "e-1", "event_id": "ev-1"},
    "provider_id": "acme",
}


def run(text: str, root: Any = ROOT) -> bool:
    return parse_condition(text).evaluate(root)


# References -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        ("$.input.blob_id", ("input", "blob_id"), "b-1"),
        ("$.input.tags[0]", ("input", "tags", 0), "a"),
        ("$.input.tags[2].deep[1]", ("input", "tags", 2, "deep", 1), 20),
        ("$.input.tags.1", ("input", "tags", "1"), "b"),
        ('$.input["dotted.key"]', ("input", "dotted.key"), "dot"),
        ("$.input['with space']", ("input", "with space"), "space"),
        ("$.input['it\\'s']", ("input", "it's"), "quote"),
        ('$["input"]["meta"].lang', ("input", "meta", "lang"), "de"),
        ("$.input.名前", ("input", "名前"), "ユキ"),
        ("$.input.content-type", ("input", "content-type"), "text/plain"),
        ("$.input.0", ("input", "0"), "zero-key"),
        ("$.input.nothing", ("input", "nothing"), None),
        ("$.steps.ocr.output", ("steps", "ocr", "output"), {"text": "Grüße\nWelt", "words": 2}),
        ("$", (), ROOT),
    ],
)
def test_reference_path_and_value(text: str, path: tuple[PathPart, ...], expected: Any) -> None:
    reference = parse_reference(text)
    assert reference == Reference(path, text)
    assert reference.evaluate(ROOT) == expected
    assert list(reference.references()) == [reference]


@pytest.mark.parametrize(
    "text",
    [
        "$.input.missing",
        "$.nope.deeper.still",
        "$.input.tags[3]",
        "$.input.tags[99999999999999999999]",
        "$.input.tags.-1",  # only looks like a negative index: a name, not found
        "$.input.meta[0]",  # an index into an object
        "$.input.tags.first",  # a key into an array
        "$.input.count.value",  # a key into a number
        "$.input.blob_id[0]",  # strings are not indexable
        "$.input.__class__",  # a key like any other, never an attribute
        "$.input.blob_id.__len__",
    ],
)
def test_reference_leading_nowhere_is_none(text: str) -> None:
    assert parse_reference(text).evaluate(ROOT) is None


@pytest.mark.parametrize("root", [None, 5, "text", [1, 2], {}])
def test_reference_into_any_root(root: Any) -> None:
    assert parse_reference("$.a[0]").evaluate(root) is None
    assert parse_reference("$").evaluate(root) == root


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("", "a reference starts with '$'", 0),
        ("input.x", "a reference starts with '$'", 0),
        ("$.", "expected a name after '.'", 2),
        ("$.a..b", "expected a name after '.'", 4),
        ("$.a.", "expected a name after '.'", 4),
        ("$[", "expected an index or a quoted key after '['", 2),
        ("$[-1]", "expected an index or a quoted key after '['", 2),
        ("$[x]", "expected an index or a quoted key after '['", 2),
        ("$[1", "expected ']'", 3),
        ("$[1.5]", "expected ']'", 3),
        ("$['a'", "expected ']'", 5),
        ("$['a", "unterminated string", 2),
        ("$.a b", "must be exactly one reference", 3),
        ("$.a ", "must be exactly one reference", 3),
        ("$x", "must be exactly one reference", 1),
        ("$.a()", "must be exactly one reference", 3),
        ("$[" + "9" * 5000 + "]", "number out of range", 2),
        ("$." + "a" * 10_000, "expression is longer than 10000 characters", 10_000),
    ],
)
def test_reference_errors(text: str, message: str, position: int) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_reference(text)
    assert message in caught.value.reason
    assert caught.value.position == position
    assert caught.value.text == text


# Templates ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("blob {$.input.blob_id}", "blob b-1"),
        ("{$.input.blob_id}", "b-1"),
        ("{$.input.count} of {$.input.tags[1]}: {$.input.ratio}", "3 of b: 0.5"),
        ("{ $.input.blob_id }", "b-1"),
        ("{\n  $.input.blob_id\t}", "b-1"),
        ("flag={$.input.flag}, none={$.input.nothing}", "flag=true, none=null"),
        ("missing={$.input.missing}", "missing=null"),
        ("tags={$.input.tags}", 'tags=["a","b",{"deep":[10,20]}]'),
        ("meta={$.input.meta}", 'meta={"lang":"de","pages":12}'),
        ("{$.input.名前}さん", "ユキさん"),
        ("{$.steps.ocr.output.text}!", "Grüße\nWelt!"),
        ("Line one {$.input.blob_id}\nLine two {$.provider_id}\n", "Line one b-1\nLine two acme\n"),
        ("{$.input['with space']}", "space"),
        ("cost {{$.input.count}", "cost {$.input.count}"),
        ("{{ $.x} and {$.input.count}", "{ $.x} and 3"),
        ('{"id": "{$.input.blob_id}", "n": {$.input.count}}', '{"id": "b-1", "n": 3}'),
        ("{} {{}} }{ {$.input.count}", "{} {{}} }{ 3"),
        ("{{{$.input.count}", "{{$.input.count}"),  # the escape wins, left to right
        ("a$.b {$.input.count}", "a$.b 3"),
    ],
)
def test_template_evaluation(text: str, expected: str) -> None:
    value = compile_value(text)
    assert isinstance(value, Template)
    assert value.text == text
    assert value.evaluate(ROOT) == expected


def test_template_parts_and_references() -> None:
    value = compile_value("a {$.input.x} b {$[0]}")
    first, second = Reference(("input", "x"), "$.input.x"), Reference((0,), "$[0]")
    assert value == Template(("a ", first, " b ", second), "a {$.input.x} b {$[0]}")
    assert list(value.references()) == [first, second]
    assert compile_value("{$.a}{$.b}") == Template(
        (Reference(("a",), "$.a"), Reference(("b",), "$.b")), "{$.a}{$.b}"
    )


@pytest.mark.parametrize(
    "text",
    [
        "plain text",
        "",
        '{"json": "stays", "n": [1, {"x": 2}]}',
        "$5.00 per page",  # only `$`, `$.` and `$[` start a reference
        "$HOME",
        " $.input.x",
        "{ not a placeholder }",
        "{{ }}",
        "}$.x{",
    ],
)
def test_strings_that_stay_literal(text: str) -> None:
    assert compile_value(text) == Literal(text)


@pytest.mark.parametrize("value", [0, 1.5, True, False, None])
def test_scalars_are_literals(value: Any) -> None:
    assert compile_value(value) == Literal(value)
    assert compile_value(value).evaluate(ROOT) == value
    assert list(compile_value(value).references()) == []


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("x {$.a", "unterminated placeholder", 2),
        ("x {$.a   ", "unterminated placeholder", 2),
        ("x {$", "unterminated placeholder", 2),
        ("line\n{ $.a\nmore}", "expected '}' after the reference", 11),
        ("x {$.a b}", "expected '}' after the reference", 7),
        ("x {$.a.}", "expected a name after '.'", 7),
        ("x {$[-1]}", "expected an index or a quoted key", 5),
        ("ok {$.a} bad {$.}", "expected a name after '.'", 16),
        ("x {$.a[1}", "expected ']'", 8),
        ("x {$['a}", "unterminated string", 5),
        ("x {$.a + 1}", "expected '}'", 7),
    ],
)
def test_template_errors(text: str, message: str, position: int) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_value(text)
    assert message in caught.value.reason
    assert caught.value.position == position
    assert caught.value.text == text


@pytest.mark.parametrize(
    ("text", "position"),
    [("$.input.x and more", 9), ("$. input", 2), ("$.input.x}", 9), ("$[0] {$.y}", 4)],
)
def test_string_starting_with_dollar_must_be_one_reference(text: str, position: int) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_value(text)
    assert caught.value.position == position
    if position > 2:
        assert "must be exactly one reference" in caught.value.reason
        assert "{$.…}" in caught.value.reason


# Compiled values --------------------------------------------------------------


def test_nested_value_compiles_and_evaluates() -> None:
    raw = {
        "id": "$.input.blob_id",
        "title": "Blob {$.input.blob_id}",
        "pages": 3,
        "labels": ["fixed", "$.input.tags[0]", {"lang": "$.input.meta.lang"}],
        "nothing": None,
    }
    value = compile_value(raw)
    assert isinstance(value, MapValue)
    assert value.evaluate(ROOT) == {
        "id": "b-1",
        "title": "Blob b-1",
        "pages": 3,
        "labels": ["fixed", "a", {"lang": "de"}],
        "nothing": None,
    }
    assert [r.text for r in value.references()] == [
        "$.input.blob_id",
        "$.input.blob_id",
        "$.input.tags[0]",
        "$.input.meta.lang",
    ]


def test_evaluation_builds_new_containers() -> None:
    value = compile_value({"a": [1, 2]})
    assert isinstance(value, MapValue)
    first, second = value.evaluate(None), value.evaluate(None)
    assert first == second == {"a": [1, 2]}
    assert first is not second
    assert first["a"] is not second["a"]


def test_dict_keys_are_never_expressions() -> None:
    value = compile_value({"$.input.x": 1, "{$.y}": 2})
    assert value == MapValue((("$.input.x", Literal(1)), ("{$.y}", Literal(2))))


def test_compile_collects_every_problem_with_its_path() -> None:
    raw = {
        "title": "ok {$.input.blob_id}",
        "metadata": {"word_count": "$.steps.ocr.output.words + 1"},
        "items": ["fine", "$.x", "{$.a", {"deep": ["{$.}"]}],
    }
    problems: list[tuple[tuple[PathPart, ...], ExpressionError]] = []
    value = compile_value(raw, problems)
    assert [(path, error.position) for path, error in problems] == [
        (("metadata", "word_count"), 24),
        (("items", 2), 0),
        (("items", 3, "deep", 0), 3),
    ]
    assert isinstance(value, MapValue)
    # Broken strings are kept as literals so compilation can go on.
    assert value.evaluate(ROOT)["items"] == ["fine", None, "{$.a", {"deep": ["{$.}"]}]


def test_compile_without_problems_list_raises_the_first_error() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_value({"a": ["{$.", "$.b c"]})
    assert caught.value.text == "{$."


def test_list_value() -> None:
    value = compile_value(["$.input.count", 2])
    assert value == ListValue((Reference(("input", "count"), "$.input.count"), Literal(2)))
    assert value.evaluate(ROOT) == [3, 2]


def test_compiled_values_are_frozen() -> None:
    value = parse_reference("$.a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.text = "$.b"  # type: ignore[misc]


# Conditions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # equality, type-strict like JSON
        ('$.input.blob_id == "b-1"', True),
        ('$.input.blob_id != "b-1"', False),
        ("$.input.count == 3", True),
        ("$.input.count == 3.0", True),
        ("$.input.count == 3e0", True),
        ('$.input.count == "3"', False),
        ("$.input.flag == true", True),
        ("$.input.flag == 1", False),
        ("1 == true", False),
        ("0 == false", False),
        ("$.input.nothing == null", True),
        ("$.input.missing == null", True),
        ("$.input.missing != null", False),
        ("null == false", False),
        ('$.input.meta == {"pages": 12, "lang": "de"}', True),
        ('$.input.tags == ["a", "b", {"deep": [10, 20.0]}]', True),
        ("[1, 2] == [2, 1]", False),
        ("[] == {}", False),
        ('$.steps.ocr.status == "completed"', True),
        ("$.input.ratio == 0.5", True),
        ("-0 == 0", True),
        ("1.5e2 == 150", True),
        # ordering: numbers with numbers, strings with strings, else false
        ("$.input.count > 2", True),
        ("$.input.count >= 3", True),
        ("$.input.count < 3", False),
        ("$.input.count <= 3", True),
        ("$.input.ratio < 1", True),
        ("-1.5 < -1", True),
        ('"apple" < "banana"', True),
        ('"b" >= "a"', True),
        ('$.input.count < "4"', False),
        ('$.input.count >= "4"', False),
        ("$.input.missing < 1", False),
        ("$.input.missing >= 1", False),
        ("null <= null", False),
        ("true > false", False),
        ("[1] < [2]", False),
        # in
        ('"b" in $.input.tags', True),
        ('"c" in $.input.tags', False),
        ('{"deep": [10, 20]} in $.input.tags', True),
        ("3 in [1, 2, 3.0]", True),
        ("true in [1]", False),
        ("null in [null]", True),
        ('"rü" in "Grüße"', True),
        ('"Welt" in $.steps.ocr.output.text', True),
        ('"" in "abc"', True),
        ('"lang" in $.input.meta', True),
        ('"de" in $.input.meta', False),
        ("1 in $.input.meta", False),
        ("1 in 12", False),
        ('1 in "123"', False),
        ('"a" in null', False),
        ("$.input.missing in $.input.tags", False),
        # && || ! and precedence
        ("true && true", True),
        ("true && false", False),
        ("false || true", True),
        ("false || false", False),
        ("true || false && false", True),  # && binds tighter than ||
        ("(true || false) && false", False),
        ("false && false || true", True),
        ("!false", True),
        ("!true", False),
        ("!!true", True),
        ("!$.input.missing", True),
        ("!$.input.count", True),  # anything but true counts as false
        ("!$.input.count == 3", False),  # ! binds looser than comparison
        ("!($.input.count == 3)", False),
        ("(!$.input.count) == true", True),
        ("!true || true", True),
        ("!(true || true)", False),
        ("!true && false || true", True),
        ("true && true && true && false", False),
        ("false || false || false || true", True),
        ("((($.input.count == 3)))", True),
        ('$.input.count==3&&$.input.blob_id=="b-1"', True),
        ("\n$.input.count\n==\t3\n", True),
        # non-bool results count as false, even truthy ones
        ("$.input.flag", True),
        ("$.input.count", False),
        ('"yes"', False),
        ("1", False),
        ("[true]", False),
        ("true", True),
        ("false", False),
        ("null", False),
        ("$.input.count && true", False),
        ("$.input.count || true", True),
        # strings: escapes and both quotes
        ('"a\\"b" == \'a"b\'', True),
        ("'it\\'s' == \"it's\"", True),
        ('"\\u00fc" == "ü"', True),
        ('"\\ud83d\\ude00" == "😀"', True),
        ('"\\n\\t\\r\\b\\f\\/\\\\" == "\\u000a\\u0009\\u000d\\u0008\\u000c/\\u005c"', True),
        ("$.input['it\\'s'] == 'quote'", True),
        ('$.input.名前 == "ユキ"', True),
        ('$.input.content-type == "text/plain"', True),
        ('"ユキ" == $.input.名前', True),
    ],
)
def test_condition(text: str, expected: bool) -> None:
    assert run(text) is expected


def test_short_circuit_never_matters_for_safety() -> None:
    # Both sides are pure, so short-circuiting only saves work; results stay bools.
    condition = parse_condition("$.a || $.b && !$.c")
    for root in [None, {"a": True}, {"b": True}, {"b": True, "c": True}, {"a": 1, "b": "x"}]:
        assert isinstance(condition.evaluate(root), bool)


def test_condition_references_in_order() -> None:
    condition = parse_condition('$.a == 1 && ($.b[0] in $["c d"] || !$.e) && [1, {"x": 2}] != $')
    assert [(r.path, r.text) for r in condition.references()] == [
        (("a",), "$.a"),
        (("b", 0), "$.b[0]"),
        (("c d",), '$["c d"]'),
        (("e",), "$.e"),
        ((), "$"),
    ]
    assert list(parse_condition("1 == 1").references()) == []


def test_condition_keeps_its_text_and_is_frozen() -> None:
    condition = parse_condition(" true ")
    assert isinstance(condition, Condition)
    assert condition.text == " true "
    with pytest.raises(dataclasses.FrozenInstanceError):
        condition.text = "false"  # type: ignore[misc]


def test_deep_but_allowed_nesting() -> None:
    assert run("(" * 64 + "true" + ")" * 64)
    assert run("!" * 64 + "true")
    assert run("[" * 64 + "]" * 64 + " == " + "[" * 63 + "]" * 63) is False


def test_comparing_data_nested_beyond_the_recursion_limit_is_false() -> None:
    deep: list[Any] = []
    for _ in range(1000):
        deep = [deep]
    root = {"a": deep, "b": deep}
    # Neither equal nor unequal can be decided, and the condition simply does not hold.
    assert run("$.a == $.b", root) is False
    assert run("$.a != $.b", root) is False


def test_long_chains_do_not_nest() -> None:
    # 1,000 operands stay one flat node, far from Python's recursion limit.
    assert run(" || ".join(["false"] * 999 + ["true"]))
    assert not run(" && ".join(["true"] * 999 + ["false"]))


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("", "expression is empty", 0),
        ("   \n", "expression is empty", 0),
        ("$.a = 1", "unexpected '=' (did you mean '=='?)", 4),
        ("$.a & $.b", "unexpected '&' (did you mean '&&'?)", 4),
        ("$.a | $.b", "unexpected '|' (did you mean '||'?)", 4),
        ("$.a === 1", "unexpected '=' (did you mean '=='?)", 6),
        ("True", "unknown name 'True' (use true, false or null)", 0),
        ("$.a == None", "unknown name 'None' (use true, false or null)", 7),
        ("$.a == NULL", "unknown name 'NULL' (use true, false or null)", 7),
        ("$.a and $.b", "unknown name 'and' (use &&)", 4),
        ("$.a == 1 or $.b", "unknown name 'or' (use ||)", 9),
        ("not $.a", "unknown name 'not' (use !)", 0),
        ("$.a == input", "unknown name 'input'", 7),
        ("$.a == 'x", "unterminated string", 7),
        ('"abc', "unterminated string", 0),
        ('"abc\\', "unterminated string", 0),
        ('"a\\qb"', "invalid escape '\\q' in string", 2),
        ('"\\u12"', "invalid \\u escape", 1),
        ('"\\u12g4"', "invalid \\u escape", 1),
        ('"a\nb"', "control character '\\n' in string", 2),
        ("1e400", "number out of range", 0),
        ("$.a < -1e400", "number out of range", 6),
        ("9" * 5000, "number out of range", 0),
        ("01", "invalid number", 0),
        ("1.", "invalid number", 0),
        ("1.5.2", "invalid number", 0),
        ("1x", "invalid number", 0),
        ("- 1", "unexpected '-'", 0),
        ("+1", "unexpected character '+'", 0),
        (".5", "unexpected character '.'", 0),
        ("$.a == 1 == 1", "comparisons cannot be chained", 9),
        ("1 < 2 < 3", "comparisons cannot be chained", 6),
        ("$.a in $.b in $.c", "comparisons cannot be chained", 11),
        ("($.a == 1", "expected ')' to close '(' at position 0, found end of expression", 9),
        ("(($.a) == 1", "expected ')'", 11),
        ("($.a $.b)", "expected ')'", 5),
        ("$.a)", "unmatched ')'", 3),
        ("()", "expected a value, found ')'", 1),
        ("$.a ==", "expected a value, found end of expression", 6),
        ("== 1", "expected a value, found '=='", 0),
        ("$.a && || $.b", "expected a value, found '||'", 7),
        ("in [1]", "expected a value, found 'in'", 0),
        ("$.a == !$.b", "'!' here needs parentheses", 7),
        ("!", "expected a value, found end of expression", 1),
        ("1 2", "unexpected number 2; expected an operator or the end", 2),
        ("$.a $.b", "unexpected reference $.b", 4),
        ("true false", "unexpected 'false'", 5),
        ("[1, 2", "expected ']' to close '[' at position 0", 5),
        ("[1 2]", "expected ']'", 3),
        ("[1,]", "expected a value, found ']'", 3),
        ("[,]", "expected a value, found ','", 1),
        ("1 in [$.a]", "may hold only literals, not references", 6),
        ('{"a": $.b}', "may hold only literals, not references", 6),
        ("{a: 1}", "expected a quoted key, found 'a'", 1),
        ("{1: 1}", "expected a quoted key, found number 1", 1),
        ('{"a" 1}', "expected ':' after the key, found number 1", 5),
        ('{"a": 1,}', "expected a quoted key, found '}'", 8),
        ('{"a": 1', "expected '}'", 7),
        ("$.", "expected a name after '.'", 2),
        ("$.a[", "expected an index or a quoted key after '['", 4),
        ("$ .a", "unexpected character '.'", 2),
        ("$.a # comment", "unexpected character '#'", 4),
        ("$.a == 1;", "unexpected character ';'", 8),
        ("\x00", "unexpected character '\\x00'", 0),
        ("true && \ud800", "unexpected character '\\ud800'", 8),
        ("__import__('os')", "unknown name '__import__'", 0),
        ("(" * 65 + "true" + ")" * 65, "nested more than 64 levels deep", 64),
        ("!" * 65 + "true", "nested more than 64 levels deep", 64),
        ("[" * 65 + "]" * 65, "nested more than 64 levels deep", 64),
        ('{"a":' * 65 + "1" + "}" * 65, "nested more than 64 levels deep", 320),
        ("(" * 32 + "[" * 33 + "]" * 33 + ")" * 32, "nested more than 64 levels deep", 64),
        ("true || " * 1250 + "true", "expression is longer than 10000 characters", 10_000),
    ],
)
def test_condition_errors(text: str, message: str, position: int) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse_condition(text)
    assert message in caught.value.reason
    assert caught.value.position == position
    assert caught.value.text == text
    assert isinstance(caught.value, ValueError)
