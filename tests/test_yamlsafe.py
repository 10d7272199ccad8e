"""Safe YAML loading with line numbers (CONTRACT §5, RELIABILITY "Hostile definitions")."""

from __future__ import annotations

from typing import Any

import pytest

from blobflow.core.yamlsafe import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_NODES,
    LoadedDocument,
    load_yaml,
    nearest_line,
)
from blobflow.errors import PathPart, YamlLoadError

# Line numbers are on the left margin of the comment at the end of each line.
WORKFLOW = """\
id: book_chapter_processing
provider_id: book-writer
name: Book chapter processing
description: >
  Summarises a chapter
  and tags it.
input_schema_id: chapter_input
output_schema_id: chapter_output
steps:
  - id: fetch
    service: studio
    endpoint: /chapters/{blob_id}
    method: GET
  - id: analyse
    service: studio
    endpoint: /analyse
    input_map:
      text: $.steps.fetch.output.text
  - id: summarise
    service: writer
    endpoint: /summaries
    input_map:
      prompt: "Summarise {$.steps.fetch.output.text}"
      style: noir
    retry: {max_attempts: 3, backoff_ms: 100}
output_map:
  summary: $.steps.summarise.output.summary
"""


def load(text: str | bytes) -> Any:
    return load_yaml(text).data


def load_error(text: str | bytes) -> YamlLoadError:
    with pytest.raises(YamlLoadError) as info:
        load_yaml(text)
    return info.value


# ---------------------------------------------------------------- plain documents


def test_workflow_document_loads_as_plain_data() -> None:
    doc = load_yaml(WORKFLOW)
    assert isinstance(doc, LoadedDocument)
    assert doc.data["id"] == "book_chapter_processing"
    assert doc.data["description"] == "Summarises a chapter and tags it.\n"
    assert [step["id"] for step in doc.data["steps"]] == ["fetch", "analyse", "summarise"]
    assert doc.data["steps"][0]["endpoint"] == "/chapters/{blob_id}"
    assert doc.data["steps"][2]["input_map"] == {
        "prompt": "Summarise {$.steps.fetch.output.text}",
        "style": "noir",
    }
    assert doc.data["steps"][2]["retry"] == {"max_attempts": 3, "backoff_ms": 100}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("a: 1\n", {"a": 1}, id="int"),
        pytest.param("a: -1.5\n", {"a": -1.5}, id="float"),
        pytest.param("a: true\n", {"a": True}, id="bool"),
        pytest.param("a: ~\nb: null\nc:\n", {"a": None, "b": None, "c": None}, id="nulls"),
        pytest.param("a: 'x'\nb: \"y\"\nc: z\n", {"a": "x", "b": "y", "c": "z"}, id="strings"),
        pytest.param("[1, {a: 2}, [b]]\n", [1, {"a": 2}, ["b"]], id="flow-root-list"),
        pytest.param('"just text"\n', "just text", id="root-scalar"),
        pytest.param("a: !!str 123\n", {"a": "123"}, id="explicit-str-tag"),
        pytest.param('a: !!int "7"\n', {"a": 7}, id="explicit-int-tag"),
        pytest.param("a: !!null ~\n", {"a": None}, id="explicit-null-tag"),
        pytest.param("? a\n: 1\n", {"a": 1}, id="explicit-key"),
        pytest.param("a: &x 1\nb: *x\n", {"a": 1, "b": 1}, id="small-alias"),
        pytest.param(
            "a: 'caf\u00e9 \u6f22\u5b57 \U0001f600'\n",
            {"a": "caf\u00e9 \u6f22\u5b57 \U0001f600"},
            id="unicode",
        ),
        pytest.param(b"\xef\xbb\xbfa: 1\n", {"a": 1}, id="utf8-bom"),
        pytest.param(b"a: 1\r\nb:\r\n  - x\r\n", {"a": 1, "b": ["x"]}, id="crlf"),
        pytest.param(
            "a: 123456789012345678901234567890\n",
            {"a": 123456789012345678901234567890},
            id="big-int",
        ),
    ],
)
def test_plain_values(text: str | bytes, expected: Any) -> None:
    assert load(text) == expected


def test_bytes_and_text_give_the_same_document() -> None:
    from_text = load_yaml(WORKFLOW)
    from_bytes = load_yaml(WORKFLOW.encode())
    assert from_text.data == from_bytes.data
    assert from_text.lines == from_bytes.lines


# ---------------------------------------------------------------- line numbers


@pytest.mark.parametrize(
    ("path", "line"),
    [
        pytest.param((), 1, id="root"),
        pytest.param(("id",), 1, id="first-key"),
        pytest.param(("description",), 4, id="folded-string-key"),
        pytest.param(("steps",), 9, id="steps"),
        pytest.param(("steps", 0), 10, id="first-item"),
        pytest.param(("steps", 0, "method"), 13, id="item-key"),
        pytest.param(("steps", 1, "input_map", "text"), 18, id="nested-key"),
        pytest.param(("steps", 2), 19, id="third-item"),
        pytest.param(("steps", 2, "input_map"), 22, id="input-map"),
        pytest.param(("steps", 2, "input_map", "prompt"), 23, id="prompt"),
        pytest.param(("steps", 2, "input_map", "style"), 24, id="style"),
        pytest.param(("steps", 2, "retry", "max_attempts"), 25, id="flow-mapping-key"),
        pytest.param(("steps", 2, "retry", "backoff_ms"), 25, id="flow-mapping-second-key"),
        pytest.param(("output_map", "summary"), 27, id="last-line"),
    ],
)
def test_line_of_every_value(path: tuple[PathPart, ...], line: int) -> None:
    lines = load_yaml(WORKFLOW).lines
    assert lines[path] == line
    assert nearest_line(lines, path) == line


@pytest.mark.parametrize(
    ("path", "line"),
    [
        pytest.param(("steps", 2, "input_map", "prompt", "deeper"), 23, id="below-a-scalar"),
        pytest.param(("steps", 2, "input_map", "missing"), 22, id="missing-key"),
        pytest.param(("steps", 7, "id"), 9, id="missing-item"),
        pytest.param(("steps", "2"), 9, id="string-is-not-an-index"),
        pytest.param(("nope", "deeper"), 1, id="falls-back-to-root"),
    ],
)
def test_nearest_line_falls_back_to_the_deepest_known_parent(
    path: tuple[PathPart, ...], line: int
) -> None:
    lines = load_yaml(WORKFLOW).lines
    assert path not in lines
    assert nearest_line(lines, path) == line


def test_nearest_line_without_any_line_is_none() -> None:
    assert nearest_line({}, ("a", 0)) is None
    assert nearest_line({}, ()) is None
    assert nearest_line({("a",): 3}, ("b",)) is None


def test_block_list_items_get_their_own_lines() -> None:
    doc = load_yaml("items:\n  - a\n  -\n    b\n  - [c, d]\n")
    assert doc.data == {"items": ["a", "b", ["c", "d"]]}
    assert doc.lines[("items", 0)] == 2
    assert doc.lines[("items", 1)] == 4  # the value, not the dash
    assert doc.lines[("items", 2)] == 5
    assert doc.lines[("items", 2, 1)] == 5


def test_crlf_line_numbers() -> None:
    lines = load_yaml(b"a: 1\r\nb:\r\n  - x\r\n  - y\r\n").lines
    assert lines[("b", 0)] == 3
    assert lines[("b", 1)] == 4


def test_multiline_literal_string() -> None:
    text = "a: 1\nprompt: |\n  line one\n\n  line three\nafter: 2\nfolded: >-\n  x\n  y\n"
    doc = load_yaml(text)
    assert doc.data["prompt"] == "line one\n\nline three\n"
    assert doc.data["folded"] == "x y"
    assert doc.lines[("prompt",)] == 2
    assert doc.lines[("after",)] == 6
    assert doc.lines[("folded",)] == 7


# ---------------------------------------------------------------- merge keys

MERGE = """\
defaults: &defaults
  timeout_seconds: 30
  method: POST
  retry: {max_attempts: 2}
step:
  <<: *defaults
  method: GET
  id: s1
"""


def test_merge_key_with_explicit_override() -> None:
    doc = load_yaml(MERGE)
    assert doc.data["step"] == {
        "timeout_seconds": 30,
        "method": "GET",
        "retry": {"max_attempts": 2},
        "id": "s1",
    }
    assert doc.data["defaults"]["method"] == "POST"  # the anchor itself is untouched
    assert doc.lines[("step", "method")] == 7  # the explicit key, not the anchor's
    assert doc.lines[("step", "id")] == 8
    assert doc.lines[("step", "timeout_seconds")] == 2  # merged: where it was written


def test_explicit_key_wins_even_when_written_before_the_merge() -> None:
    text = "base: &b {k: 1, other: 2}\nc:\n  k: 9\n  <<: *b\n"
    assert load(text)["c"] == {"k": 9, "other": 2}


def test_merge_of_a_list_earlier_mappings_win() -> None:
    text = "a: &a {k: 1, x: 1}\nb: &b {k: 2, y: 2}\nc:\n  <<: [*a, *b]\n  z: 3\n"
    assert load(text)["c"] == {"k": 1, "x": 1, "y": 2, "z": 3}


def test_merge_of_a_scalar_is_rejected_with_the_line() -> None:
    error = load_error("a: 1\nb:\n  <<: 5\n")
    assert "merge" in error.message
    assert error.line == 3


# ---------------------------------------------------------------- keys stay text


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param("on: push\n", "on", id="on"),
        pytest.param("off: 1\n", "off", id="off"),
        pytest.param("yes: 1\n", "yes", id="yes"),
        pytest.param("no: 1\n", "no", id="no"),
        pytest.param("true: 1\n", "true", id="true"),
        pytest.param("200: ok\n", "200", id="int"),
        pytest.param("0x1F: x\n", "0x1F", id="hex"),
        pytest.param("1.5: x\n", "1.5", id="float"),
        pytest.param("~: x\n", "~", id="tilde"),
        pytest.param("null: x\n", "null", id="null"),
        pytest.param("2024-01-01: x\n", "2024-01-01", id="date"),
        pytest.param("'quoted': x\n", "quoted", id="quoted"),
    ],
)
def test_keys_stay_the_text_written(text: str, key: str) -> None:
    data = load(text)
    assert list(data) == [key]
    assert isinstance(next(iter(data)), str)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("2024-01-01", id="date"),
        pytest.param("2024-01-01T10:00:00Z", id="datetime"),
        pytest.param("2001-12-14t21:59:43.10-05:00", id="lowercase-t-offset"),
        pytest.param("2001-12-14 21:59:43.10 -5", id="spaced"),
    ],
)
def test_timestamps_stay_text(value: str) -> None:
    assert load(f"at: {value}\n") == {"at": value}
    assert load(f"at: !!timestamp {value}\n") == {"at": value}


# ---------------------------------------------------------------- duplicate keys


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        pytest.param("a: 1\nb: 2\na: 3\n", "a", 3, id="top-level"),
        pytest.param("a:\n  x: 1\n  y: 2\n  x: 3\nb: 1\n", "x", 4, id="nested"),
        pytest.param("l:\n  - k: 1\n    k: 2\n", "k", 3, id="in-list-item"),
        pytest.param("{a: 1, a: 2}\n", "a", 1, id="flow"),
        pytest.param("on: 1\n'on': 2\n", "on", 2, id="on-plain-and-quoted"),
        pytest.param("1: a\n'1': b\n", "1", 2, id="int-and-string"),
        pytest.param("a: &x 1\nb: 2\nb: *x\n", "b", 3, id="alias-value"),
    ],
)
def test_duplicate_keys_are_rejected_with_the_line(text: str, key: str, line: int) -> None:
    error = load_error(text)
    assert error.message == f"duplicate key {key!r}"
    assert error.line == line
    assert str(error) == f"line {line}: duplicate key {key!r}"


def test_duplicate_merge_keys_are_not_duplicates() -> None:
    text = "a: &a {x: 1}\nb: &b {y: 2}\nc:\n  <<: *a\n  <<: *b\n"
    assert load(text)["c"] == {"x": 1, "y": 2}


# ---------------------------------------------------------------- tags


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param('a: !!python/object/apply:os.system ["true"]\n', 1, id="python-apply"),
        pytest.param("x: 1\ny: !!python/name:os.system\n", 2, id="python-name"),
        pytest.param("a: !!python/object/new:builtins.dict {}\n", 1, id="python-new"),
        pytest.param("a: !!python/tuple [1, 2]\n", 1, id="python-tuple"),
        pytest.param("!!python/object:os.environ {}\n", 1, id="python-object-root"),
        pytest.param("a: !!binary aGVsbG8=\n", 1, id="binary"),
        pytest.param("a: !!set {x, y}\n", 1, id="set"),
        pytest.param("a: !!omap [{x: 1}]\n", 1, id="omap"),
        pytest.param("a: !!pairs [{x: 1}]\n", 1, id="pairs"),
        pytest.param("a: !foo bar\n", 1, id="custom-scalar"),
        pytest.param("a:\n  - !foo [1]\n", 2, id="custom-sequence"),
        pytest.param("a: !foo {k: 1}\n", 1, id="custom-mapping"),
        pytest.param("a: !<tag:example.com,2024:x> y\n", 1, id="verbatim-tag"),
    ],
)
def test_unsafe_and_unknown_tags_are_rejected(text: str, line: int) -> None:
    error = load_error(text)
    assert error.message.startswith("unsupported YAML tag")
    assert error.line == line


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("!!binary aGk=: 1\n", id="binary-key"),
        pytest.param("!foo k: 1\n", id="custom-key"),
        pytest.param("!!python/name:os.system : 1\n", id="python-name-key"),
    ],
)
def test_tags_on_keys_are_rejected(text: str) -> None:
    error = load_error(text)
    assert error.message.startswith("unsupported YAML tag")


def test_custom_tag_on_an_inline_merge_source_is_rejected() -> None:
    error = load_error("a:\n  <<: !foo {k: 1}\n")
    assert error.message.startswith("unsupported YAML tag")


# ---------------------------------------------------------------- numbers JSON cannot hold


@pytest.mark.parametrize(
    "value",
    [".nan", ".NaN", ".inf", "-.inf", "+.Inf", "1.0e+400", "-1.0e+400"],
)
def test_non_finite_floats_are_rejected(value: str) -> None:
    error = load_error(f"a: 1\nb: {value}\n")
    assert error.message == f"{value!r} is not a JSON number"
    assert error.line == 2


def test_int_beyond_python_digit_limit_is_rejected() -> None:
    error = load_error("a: " + "9" * 5000 + "\n")
    assert error.message.startswith("invalid value")
    assert error.line == 1


@pytest.mark.parametrize(
    ("text", "message_start"),
    [
        pytest.param("a: !!float abc\n", "invalid value", id="float-text"),
        pytest.param("a: !!int abc\n", "invalid value", id="int-text"),
    ],
)
def test_explicit_tags_with_bad_values(text: str, message_start: str) -> None:
    assert load_error(text).message.startswith(message_start)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a: !!bool maybe\n", id="bool-maybe-KeyError"),
        pytest.param("a: !!int\n", id="empty-int-IndexError"),
        pytest.param("a: !!float ''\n", id="empty-float-IndexError"),
    ],
)
def test_explicit_tags_with_impossible_values_are_load_errors(text: str) -> None:
    error = load_error(text)
    assert error.line == 1


@pytest.mark.parametrize(
    "text",
    ["1:30", "1" + ":0" * 180 + ".5", "1" + ":59" * 3000],
    ids=["short", "huge-float", "huge-int"],
)
def test_sexagesimal_numbers_stay_text(text: str) -> None:
    # YAML 1.1 reads `1:30` as 90; base 60 would also make huge integers cheap.
    assert load(f"a: {text}\n") == {"a": text}


def test_plain_equals_sign_is_a_string() -> None:
    assert load("op: =\n") == {"op": "="}


# ---------------------------------------------------------------- hostile documents

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_billion_laughs_is_rejected() -> None:
    error = load_error(BILLION_LAUGHS)
    assert error.message == f"document expands to more than {MAX_NODES} values"
    assert error.line is not None


def test_alias_bomb_of_mappings_is_rejected() -> None:
    lines = [
        "a0: &a0 {" + ", ".join(f"k{i}: [x, x, x, x, x, x, x, x, x, x]" for i in range(10)) + "}"
    ]
    for level in range(1, 6):
        refs = ", ".join(f"m{i}: *a{level - 1}" for i in range(10))
        lines.append(f"a{level}: &a{level} {{{refs}}}")
    assert load_error("\n".join(lines) + "\n").message.startswith("document expands")


def test_recursive_alias_is_rejected() -> None:
    assert load_error("&a [*a]\n").message == f"nesting deeper than {MAX_DEPTH} levels"
    assert load_error("&a {x: *a}\n").message == f"nesting deeper than {MAX_DEPTH} levels"


def test_nesting_at_the_limit_loads() -> None:
    data = load("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    for _ in range(MAX_DEPTH - 1):
        data = data[0]
    assert data == []


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[" * 100 + "]" * 100, id="100-flow-lists"),
        pytest.param("{a: " * 100 + "1" + "}" * 100, id="100-flow-maps"),
        pytest.param("- " * 100 + "x\n", id="100-block-lists"),
        pytest.param("".join("  " * i + "a:\n" for i in range(100)), id="100-block-maps"),
        pytest.param("[" * 10_000 + "]" * 10_000, id="10000-flow-lists"),
        pytest.param("[\n" * 10_000, id="10000-on-lines"),
        pytest.param("{a: " * 10_000 + "1" + "}" * 10_000, id="10000-flow-maps"),
        pytest.param("- " * 10_000 + "x\n", id="10000-block-lists"),
    ],
)
def test_deep_nesting_is_rejected_without_recursion_error(text: str) -> None:
    error = load_error(text)  # a RecursionError would escape pytest.raises
    assert error.message == f"nesting deeper than {MAX_DEPTH} levels"


def test_linear_alias_expansion_over_the_node_limit_is_rejected() -> None:
    # No exponential trick: one list of 1,000 values used 101 times, which is
    # what an expanded copy of the document would hold.
    text = "a: &a [" + ", ".join(["1"] * 1000) + "]\nb: [" + ", ".join(["*a"] * 101) + "]\n"
    error = load_error(text)
    assert error.message == f"document expands to more than {MAX_NODES} values"
    assert error.line == 1


def test_alias_expansion_under_the_node_limit_loads() -> None:
    text = "a: &a [" + ", ".join(["1"] * 1000) + "]\nb: [" + ", ".join(["*a"] * 90) + "]\n"
    data = load(text)
    assert len(data["b"]) == 90
    assert data["b"][89] == [1] * 1000


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b"a: '" + b"x" * MAX_BYTES + b"'\n", id="bytes"),
        pytest.param("a: '" + "x" * MAX_BYTES + "'\n", id="text"),
        pytest.param(b"#" * (MAX_BYTES + 1), id="one-byte-over"),
        pytest.param(b"\xff" * (10 * MAX_BYTES), id="10-MB-not-even-utf8"),
    ],
)
def test_file_over_max_bytes_is_rejected(text: str | bytes) -> None:
    assert load_error(text).message == f"file is larger than {MAX_BYTES} bytes"


def test_text_over_max_bytes_in_utf8_is_rejected() -> None:
    text = "a: '" + "\u20ac" * (MAX_BYTES // 3 + 1) + "'\n"  # 3 bytes per character
    assert len(text) < MAX_BYTES < len(text.encode())
    assert load_error(text).message == f"file is larger than {MAX_BYTES} bytes"


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        pytest.param(b"a: \xff\n", "invalid start byte at byte 3", id="invalid-start"),
        pytest.param(b"a: \xc3\n", "invalid continuation byte at byte 3", id="truncated"),
        pytest.param(b"a: \xed\xa0\x80\n", "at byte 3", id="encoded-surrogate"),
        pytest.param("a: 1\n".encode("utf-16"), "at byte 0", id="utf-16"),
    ],
)
def test_invalid_utf8_is_rejected_clearly(raw: bytes, detail: str) -> None:
    error = load_error(raw)
    assert error.message.startswith("not UTF-8: ")
    assert detail in error.message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param("a: [1, 2\nb: 3\n", 2, id="unclosed-flow"),
        pytest.param("a:\n  b: 1\n c: 2\n", 3, id="bad-indent"),
        pytest.param('a: "x\n', 2, id="unclosed-quote"),
        pytest.param("a: 1\nb: *nope\n", 2, id="undefined-alias"),
        pytest.param("a: \t\n", 1, id="tab"),
        pytest.param("a: 1\n- b\n", 2, id="list-after-map"),
    ],
)
def test_invalid_syntax_gives_a_line(text: str, line: int) -> None:
    error = load_error(text)
    assert error.message.startswith("invalid YAML: ")
    assert error.line == line
    assert str(error).startswith(f"line {line}: invalid YAML: ")


def test_control_character_is_rejected() -> None:
    assert load_error("a: \x00\n").message.startswith("invalid YAML: ")


def test_escaped_nul_in_a_quoted_string_is_just_text() -> None:
    assert load('a: "x\\0y"\n') == {"a": "x\x00y"}


# ---------------------------------------------------------------- documents


@pytest.mark.parametrize(
    ("text", "found"),
    [
        pytest.param("a: 1\n---\nb: 2\n", 2, id="two"),
        pytest.param("---\na: 1\n---\nb: 2\n---\nc: 3\n", 3, id="three"),
        pytest.param("", 0, id="empty-text"),
        pytest.param(b"", 0, id="empty-bytes"),
        pytest.param("# only a comment\n\n", 0, id="comment-only"),
    ],
)
def test_exactly_one_document(text: str | bytes, found: int) -> None:
    error = load_error(text)
    assert error.message == f"expected one YAML document, found {found}"
    assert error.line is None


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param("---\n", 2, id="marker-only"),
        pytest.param("---\n...\n", 2, id="marker-and-end"),
        pytest.param("~\n", 1, id="tilde"),
        pytest.param("null\n", 1, id="null"),
    ],
)
def test_empty_document_is_none_data(text: str, line: int) -> None:
    doc = load_yaml(text)
    assert doc.data is None
    assert doc.lines == {(): line}


def test_yaml_load_error_is_a_value_error() -> None:
    error = YamlLoadError("boom", 4)
    assert isinstance(error, ValueError)
    assert (error.message, error.line, str(error)) == ("boom", 4, "line 4: boom")
    assert str(YamlLoadError("boom")) == "boom"


# ---------------------------------------------------------------- merge-key bugs


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a:\n  <<: {[1]: 2}\n", id="sequence-key"),
        pytest.param("a:\n  <<: {{x: 1}: 2}\n", id="mapping-key"),
    ],
)
def test_non_scalar_key_in_inline_merge_source_is_a_load_error(text: str) -> None:
    assert load_error(text).message == "mapping keys must be plain text"


def test_duplicate_key_in_inline_merge_source_is_rejected() -> None:
    assert load_error("a:\n  <<: {k: 1, k: 2}\n").message == "duplicate key 'k'"


def test_non_scalar_key_outside_a_merge_is_rejected() -> None:
    error = load_error("a: 1\n? [1]\n: 2\n")
    assert error.message == "mapping keys must be plain text"
    assert error.line == 2
