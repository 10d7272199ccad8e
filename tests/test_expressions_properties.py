"""Properties of the expression language that must hold for any input text or data.

Definitions come from users and data comes from events, so parsing must fail
only with `ExpressionError` and evaluation must never fail at all.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from blobflow.core.conditions import parse_condition
from blobflow.core.expressions import Literal, compile_value, parse_reference
from blobflow.core.jsonvalues import strict_equal
from blobflow.errors import ExpressionError

FAST = settings(max_examples=300, deadline=None)

KEYS = st.sampled_from(["a", "b", "input", "x y", "0", "名前", ""]) | st.text(max_size=5)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=8,
)
# Roots shaped like the real ones, so references actually find values.
ROOTS = JSON | st.fixed_dictionaries({"a": JSON, "b": JSON, "input": JSON})
# Cheap fixed roots for tests whose point is parsing; awkward values on purpose.
SAMPLE_ROOTS = st.sampled_from(
    [
        None,
        "text",
        [1, [2, {"a": None}]],
        {"a": [1, {"b": "x"}], "b": {"a": 10**30}, "input": {"x y": 1e308, "a": "\ud800"}},
    ]
)

REFERENCES = st.sampled_from(
    ["$", "$.a", "$.b", "$.a[0]", "$.a.b", "$.input", "$.input.a", '$["x y"]', "$.b[1].a"]
)
FRAGMENTS = st.sampled_from(
    [
        *["$", "$.", "$.a", "$[", "$[0]", "$['a']", ".", "[", "]", "{", "}", "(", ")", ",", ":"],
        *["==", "!=", "<", "<=", ">", ">=", "&&", "||", "!", "in", "=", "&", "|", "-"],
        *["0", "1", "-1.5e3", "1e999", "01", "true", "false", "null", "True", "and"],
        *['"', "'", '"a"', "'b'", '"\\u00e9"', '"\\ud800"', "\\", "\\u", "\\n"],
        *[" ", "\n", "\t", "\x00", "\ud800", "é", "{$", "{{$", "{ $.a }", "}"],
    ]
)
TOKEN_SOUP = st.lists(FRAGMENTS, max_size=25).map("".join)


def _leaf() -> st.SearchStrategy[str]:
    literals = SCALARS.map(json.dumps) | st.sampled_from(["[1, 2]", '{"a": [true]}', "'x'"])
    return REFERENCES | literals


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    operators = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in"])
    comparison = st.tuples(_leaf(), operators, _leaf()).map(" ".join)
    return (
        comparison
        | children.map(lambda c: f"({c})")
        | children.map(lambda c: f"!({c})")
        | st.tuples(children, st.sampled_from(["&&", "||"]), children).map(" ".join)
    )


VALID_CONDITIONS = st.recursive(_leaf(), _combine, max_leaves=12)


@FAST
@given(st.text() | TOKEN_SOUP, st.data())
def test_any_condition_text_parses_or_raises_expression_error(text: str, data: Any) -> None:
    try:
        condition = parse_condition(text)
    except ExpressionError as exc:
        assert (exc.text, 0 <= exc.position <= len(text)) == (text, True)  # noqa: PT017
        return
    # Roots are drawn only for text that parsed, which keeps the run fast.
    assert isinstance(condition.evaluate(data.draw(ROOTS)), bool)
    list(condition.references())


@FAST
@given(VALID_CONDITIONS, ROOTS)
def test_well_formed_conditions_parse_and_evaluate_to_bool(text: str, root: Any) -> None:
    condition = parse_condition(text)
    assert isinstance(condition.evaluate(root), bool)
    assert all(r.text.startswith("$") for r in condition.references())


@FAST
@given(JSON.filter(lambda v: isinstance(v, list | dict)) | SCALARS, st.booleans())
def test_json_text_is_a_literal_with_the_same_value(value: Any, ascii_only: bool) -> None:
    condition = parse_condition(json.dumps(value, ensure_ascii=ascii_only))
    assert isinstance(condition.expression, Literal)
    assert strict_equal(condition.expression.value, value)


@FAST
@given(st.text() | TOKEN_SOUP | REFERENCES, st.data())
def test_any_reference_text_parses_or_raises_expression_error(text: str, data: Any) -> None:
    try:
        reference = parse_reference(text)
    except ExpressionError:
        return
    assert reference.text == text
    reference.evaluate(data.draw(SAMPLE_ROOTS | ROOTS))


@FAST
@given(
    st.dictionaries(KEYS, st.lists(st.text() | TOKEN_SOUP, max_size=3) | TOKEN_SOUP, max_size=3),
    st.data(),
)
def test_any_value_compiles_or_raises_expression_error(raw: Any, data: Any) -> None:
    try:
        value = compile_value(raw)
    except ExpressionError:
        problems: list[Any] = []
        compile_value(raw, problems)
        assert problems
        return
    value.evaluate(data.draw(SAMPLE_ROOTS))


PLAIN = st.text(st.characters(exclude_characters="{$"), max_size=8)


@FAST
@given(st.lists(PLAIN | REFERENCES.map(lambda r: "{" + r + "}"), max_size=6), SAMPLE_ROOTS | JSON)
def test_templates_always_evaluate_to_text(pieces: list[str], root: Any) -> None:
    assert isinstance(compile_value("".join(pieces)).evaluate(root), str)


@FAST
@given(st.text().filter(lambda t: "{" not in t and not t.startswith(("$.", "$[")) and t != "$"))
def test_text_without_placeholders_stays_literal(text: str) -> None:
    assert compile_value(text) == Literal(text)
