"""JSON Schema 2020-12 definitions and validation (CONTRACT §5.1)."""

from __future__ import annotations

from typing import Any

import pytest

from blobflow.core.jsonschemas import (
    DIALECT_2020_12,
    MAX_ERRORS,
    SchemaValidator,
    SchemaViolation,
    schema_problems,
)
from blobflow.errors import PathPart

CHAPTER: dict[str, Any] = {
    "$schema": DIALECT_2020_12,
    "type": "object",
    "required": ["blob_id", "metadata"],
    "properties": {
        "blob_id": {"type": "string", "minLength": 1},
        "metadata": {
            "type": "object",
            "properties": {
                "type": {"enum": ["chapter", "verse"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "pages": {"type": "integer", "minimum": 1},
            },
        },
        "b": {"type": "array", "items": {"type": "integer"}},
    },
}

REMOTE_REF = "http://127.0.0.1:9/x.json"  # discard port on loopback: never a real schema

# ---------------------------------------------------------------- schema_problems


@pytest.mark.parametrize(
    "definition",
    [
        pytest.param({}, id="empty"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param({"type": "object"}, id="type"),
        pytest.param({"type": ["string", "null"]}, id="type-list"),
        pytest.param(CHAPTER, id="chapter"),
        pytest.param({"$schema": DIALECT_2020_12 + "#"}, id="dialect-with-hash"),
        pytest.param({"format": "uuid"}, id="format"),
        pytest.param({"prefixItems": [{"type": "string"}], "items": False}, id="prefix-items"),
        pytest.param({"$ref": "#/$defs/id", "$defs": {"id": {"type": "string"}}}, id="local-ref"),
        pytest.param({"maximum": 2**70, "const": 10**30}, id="big-ints"),
        pytest.param({"properties": {"\u00e9\U0001f600": {"type": "string"}}}, id="unicode-keys"),
    ],
)
def test_valid_schemas_have_no_problems(definition: Any) -> None:
    assert schema_problems(definition) == []
    SchemaValidator(definition)  # compiles


@pytest.mark.parametrize(
    ("definition", "path", "fragment"),
    [
        pytest.param([], (), "must be an object or a boolean", id="list"),
        pytest.param("object", (), "must be an object or a boolean", id="string"),
        pytest.param(None, (), "must be an object or a boolean", id="null"),
        pytest.param(1, (), "must be an object or a boolean", id="number"),
        pytest.param({"type": "nope"}, ("type",), '"nope"', id="unknown-type"),
        pytest.param({"type": 5}, ("type",), "5", id="type-not-text"),
        pytest.param({"type": ["string", "nope"]}, ("type",), "", id="unknown-type-in-list"),
        pytest.param(
            {"properties": {"a": {"type": "nope"}}},
            ("properties", "a", "type"),
            '"nope"',
            id="nested-unknown-type",
        ),
        pytest.param({"minLength": -1}, ("minLength",), "-1", id="negative-min-length"),
        pytest.param({"required": "a"}, ("required",), '"a"', id="required-not-list"),
        pytest.param(
            {"pattern": "("}, ("pattern",), "not a valid regular expression", id="bad-regex"
        ),
        pytest.param({"$ref": "#/$defs/missing"}, (), "/$defs/missing", id="dangling-local-ref"),
        pytest.param({"type": "object", 1: 2}, (), "", id="non-text-key"),
    ],
)
def test_invalid_schemas(definition: Any, path: tuple[PathPart, ...], fragment: str) -> None:
    problems = schema_problems(definition)
    assert len(problems) == 1
    assert problems[0].path == path
    assert fragment in problems[0].message
    assert "\n" not in problems[0].message


@pytest.mark.parametrize(
    "dialect",
    [
        pytest.param("http://json-schema.org/draft-07/schema#", id="draft-07"),
        pytest.param("http://json-schema.org/draft-04/schema#", id="draft-04"),
        pytest.param("https://json-schema.org/draft/2019-09/schema", id="2019-09"),
        pytest.param("http://json-schema.org/draft/2020-12/schema", id="http-not-https"),
        pytest.param("https://json-schema.org/draft/2020-12/schema/", id="trailing-slash"),
        pytest.param("", id="empty"),
        pytest.param(5, id="number"),
        pytest.param(None, id="null"),
    ],
)
def test_only_the_2020_12_dialect_is_accepted(dialect: Any) -> None:
    problems = schema_problems({"$schema": dialect, "type": "object"})
    assert problems == [
        SchemaViolation(("$schema",), f"only {DIALECT_2020_12} is supported"),
    ]


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param(REMOTE_REF, id="http-loopback"),
        pytest.param(REMOTE_REF + "#/$defs/x", id="http-with-fragment"),
        pytest.param("https://169.254.169.254/latest/meta-data", id="metadata-address"),
        pytest.param("file:///etc/passwd", id="file"),
    ],
)
def test_remote_ref_is_rejected_without_fetching(ref: str) -> None:
    definition = {"type": "object", "properties": {"a": {"$ref": ref}}}
    problems = schema_problems(definition)
    assert len(problems) == 1
    message = problems[0].message
    assert ref.split("#")[0] in message
    # Refused before any connection: not "connection refused", "timed out" or a parse error
    # of whatever answered.
    assert "disabled" in message.lower()
    assert "refused" not in message.lower()
    assert "timed out" not in message.lower()
    with pytest.raises(ValueError, match="disabled"):
        SchemaValidator(definition)


def test_schema_validator_rejects_an_invalid_schema() -> None:
    with pytest.raises(ValueError, match="nope"):
        SchemaValidator({"type": "nope"})


# ---------------------------------------------------------------- violations


def test_valid_instance_has_no_violations() -> None:
    validator = SchemaValidator(CHAPTER)
    instance = {
        "blob_id": "b-1",
        "metadata": {"type": "chapter", "tags": ["a"], "pages": 3},
        "b": [1, 2.0, 2**70],
        "unknown": {"kept": True},
    }
    assert validator.violations(instance) == []


@pytest.mark.parametrize(
    ("instance", "expected"),
    [
        pytest.param(
            {"blob_id": "b", "metadata": {}, "b": [1, "x"]},
            ['b[1]: "x" is not of type "integer"'],
            id="array-item",
        ),
        pytest.param("x", ['(root): "x" is not of type "object"'], id="root"),
        pytest.param(
            {"metadata": {}},
            ['(root): "blob_id" is a required property'],
            id="required-at-root",
        ),
        pytest.param(
            {"blob_id": "b", "metadata": {"tags": ["ok", 7, None]}},
            [
                'metadata.tags[1]: 7 is not of type "string"',
                'metadata.tags[2]: null is not of type "string"',
            ],
            id="nested-array-in-object",
        ),
        pytest.param(
            {"blob_id": "", "metadata": {"pages": 0}},
            [
                'blob_id: "" is shorter than 1 character',
                "metadata.pages: 0 is less than the minimum of 1",
            ],
            id="two-places",
        ),
        pytest.param(
            {"blob_id": "b", "metadata": {"pages": True}},
            ['metadata.pages: true is not of type "integer"'],
            id="bool-is-not-integer",
        ),
        pytest.param(
            {"blob_id": "b", "metadata": {"type": "poem"}},
            ['metadata.type: "poem" is not one of "chapter" or "verse"'],
            id="enum",
        ),
    ],
)
def test_violation_paths_and_text(instance: Any, expected: list[str]) -> None:
    found = [str(v) for v in SchemaValidator(CHAPTER).violations(instance)]
    assert sorted(found) == sorted(expected)


def test_violation_paths_are_tuples_of_keys_and_indexes() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {
                "type": "object",
                "properties": {
                    "b c": {"type": "array", "items": {"type": "object", "required": ["z"]}}
                },
            }
        },
    }
    violations = SchemaValidator(schema).violations({"a": {"b c": [{}, {"z": 1}, {}]}})
    assert [v.path for v in violations] == [("a", "b c", 0), ("a", "b c", 2)]
    assert str(violations[0]) == 'a.b c[0]: "z" is a required property'


def test_violations_of_a_local_ref() -> None:
    schema = {
        "type": "array",
        "items": {"$ref": "#/$defs/id"},
        "$defs": {"id": {"type": "string", "format": "uuid"}},
    }
    validator = SchemaValidator(schema)
    assert validator.violations(["123e4567-e89b-12d3-a456-426614174000"]) == []
    assert [str(v) for v in validator.violations(["nope", 1])] == [
        '[0]: "nope" is not a "uuid"',
        '[1]: 1 is not of type "string"',
    ]


@pytest.mark.parametrize(
    ("format_name", "good", "bad"),
    [
        pytest.param("uuid", "123e4567-e89b-12d3-a456-426614174000", "not-a-uuid", id="uuid"),
        pytest.param("uuid", "123E4567-E89B-12D3-A456-426614174000", "123e4567", id="uuid-upper"),
        pytest.param("email", "a@example.com", "nope", id="email"),
        pytest.param("email", "first.last@example.org", "a@", id="email-no-domain"),
        pytest.param("date-time", "2024-01-01T10:00:00Z", "2024-01-01", id="date-time"),
        pytest.param("date", "2024-02-29", "2023-02-29", id="date"),
        pytest.param("ipv4", "127.0.0.1", "256.0.0.1", id="ipv4"),
    ],
)
def test_formats_are_asserted(format_name: str, good: str, bad: str) -> None:
    validator = SchemaValidator({"type": "string", "format": format_name})
    assert validator.violations(good) == []
    assert [str(v) for v in validator.violations(bad)] == [
        f'(root): "{bad}" is not a "{format_name}"'
    ]


def test_format_applies_only_to_strings() -> None:
    assert SchemaValidator({"format": "uuid"}).violations(5) == []


@pytest.mark.parametrize(
    ("schema", "instance", "valid"),
    [
        pytest.param({"type": "integer"}, 1.0, True, id="1.0-is-an-integer"),
        pytest.param({"type": "integer"}, True, False, id="true-is-not-an-integer"),
        pytest.param({"type": "number"}, False, False, id="false-is-not-a-number"),
        pytest.param({"const": 1}, True, False, id="const-1-vs-true"),
        pytest.param({"enum": [1]}, 1.0, True, id="enum-1-vs-1.0"),
        pytest.param({"type": "integer"}, 2**70, True, id="big-int"),
        pytest.param({"maximum": 10}, 10**400, False, id="huge-int-vs-maximum"),
        pytest.param({"const": 2**70}, 2**70 + 1, False, id="big-const-exact"),
        pytest.param({"type": "array"}, ("a",), True, id="tuple-is-an-array"),
        pytest.param({"type": "string", "maxLength": 1}, "\U0001f600", True, id="code-points"),
        pytest.param(False, None, False, id="false-schema"),
        pytest.param(True, {"anything": [1]}, True, id="true-schema"),
    ],
)
def test_json_semantics(schema: Any, instance: Any, valid: bool) -> None:
    assert (SchemaValidator(schema).violations(instance) == []) is valid


def test_at_most_max_errors_violations_in_order() -> None:
    validator = SchemaValidator({"type": "array", "items": {"type": "integer"}})
    violations = validator.violations(["x"] * (MAX_ERRORS * 3))
    assert len(violations) == MAX_ERRORS
    assert [v.path for v in violations] == [(i,) for i in range(MAX_ERRORS)]


def test_exactly_max_errors_are_all_reported() -> None:
    validator = SchemaValidator({"type": "array", "items": {"type": "integer"}})
    assert len(validator.violations(["x"] * MAX_ERRORS)) == MAX_ERRORS
    assert len(validator.violations(["x"] * (MAX_ERRORS - 1))) == MAX_ERRORS - 1


def test_validator_is_reusable() -> None:
    validator = SchemaValidator({"type": "integer"})
    for _ in range(3):
        assert validator.violations(1) == []
        assert len(validator.violations("x")) == 1


def test_messages_are_one_line() -> None:
    schema = {"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 3}]}
    for violation in SchemaValidator(schema).violations(["x"]):
        assert violation.message
        assert "\n" not in violation.message


@pytest.mark.parametrize(
    ("path", "text"),
    [
        pytest.param((), "(root): boom", id="root"),
        pytest.param(("a",), "a: boom", id="key"),
        pytest.param((0,), "[0]: boom", id="index"),
        pytest.param(("b", 1, "c"), "b[1].c: boom", id="mixed"),
    ],
)
def test_schema_violation_str(path: tuple[PathPart, ...], text: str) -> None:
    assert str(SchemaViolation(path, "boom")) == text
