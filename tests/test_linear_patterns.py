"""Regular expressions run in linear time (RELIABILITY guarantee 8): trigger `matches`
patterns on RE2, schema `pattern`s on Rust's `regex` engine; what they refuse is a
definition error with the reason, never handed to a backtracking engine."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from blobflow.core.jsonschemas import SchemaValidator, schema_problems
from blobflow.core.regexes import MAX_PATTERN_SIZE, compile_linear
from blobflow.core.triggers import compile_condition
from blobflow.errors import TriggerError

MIB = 1024 * 1024
# Python's `re` needs half a second for this against 23 characters of HOSTILE, and
# 2.7 times more for each 2 more.
CATASTROPHIC = r"^(\w+\s?)*$"
HOSTILE = "a" * (MIB - 1) + "!"


@pytest.mark.parametrize(
    "pattern",
    [
        "^chap",
        "(?i)^chapter$",
        r"^\d{4}-\d{2}-\d{2}$",
        r"\.(png|jpe?g|gif)$",
        r"^[a-f0-9]{64}$",
        r"^\pL+$",  # Unicode classes count once towards the size
        r"\x{263a}",
        "(?P<name>x)",
        r"\Aa\z",
        CATASTROPHIC,
    ],
)
def test_accepted_patterns(pattern: str) -> None:
    condition = compile_condition("metadata.type", "matches", pattern)
    assert condition.pattern == compile_linear(pattern)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(a)\1", r"invalid escape sequence: \1 (RE2 has no backreferences)"),
        ("(?P<n>a)(?P=n)", "invalid perl operator: (?P (RE2 has no named backreferences)"),
        ("a(?=b)", "invalid perl operator: (?= (RE2 has no lookahead)"),
        ("a(?!b)", "invalid perl operator: (?! (RE2 has no lookahead)"),
        ("(?<=a)b", "invalid perl operator: (?<= (RE2 has no lookbehind)"),
        ("(?<!a)b", "invalid perl operator: (?<! (RE2 has no lookbehind)"),
        ("(?>a+)b", "invalid perl operator: (?> (RE2 has no atomic groups)"),
        ("(a)?(?(1)b|c)", "invalid perl operator: (?( (RE2 has no conditionals)"),
        ("a*+", "bad repetition operator: *+"),
        (r"a\Z", r"invalid escape sequence: \Z"),
        ("a{1001}", "invalid repetition size: {1001}"),
        ("(unclosed", "missing ): (unclosed"),
        ("\ud800", "lone surrogate"),
        ("a[ab]{200}c", f"pattern too large: size 206, at most {MAX_PATTERN_SIZE}"),
        (".{1000}", "pattern too large: size 2004"),
        (r"(?i)(\w\W?){1000}z", "pattern too large"),
    ],
)
def test_refused_patterns_say_why(pattern: str, reason: str) -> None:
    with pytest.raises(TriggerError) as raised:
        compile_condition("metadata.type", "matches", pattern)
    assert raised.value.part == "value"
    prefix = f"operator 'matches' has an invalid regular expression {pattern!r}: "
    assert str(raised.value).startswith(prefix)
    assert reason in str(raised.value)


def _timed(condition: Any, event: dict[str, Any]) -> tuple[bool, float]:
    started = time.perf_counter()
    held = bool(condition.holds(event, "onCreate"))
    return held, time.perf_counter() - started


@pytest.mark.timeout(20)
def test_a_catastrophic_pattern_on_a_mebibyte_takes_milliseconds() -> None:
    condition = compile_condition("content", "matches", CATASTROPHIC)
    held, took = _timed(condition, {"content": HOSTILE})
    assert held is False
    # Measured 2-4 ms; the margin is for slow machines.
    assert took < 0.1, f"{took * 1000:.0f} ms"


@pytest.mark.timeout(20)
def test_the_slowest_pattern_of_the_largest_size_stays_bounded() -> None:
    # The automaton's cache thrashes on this one, so RE2 falls back to simulating
    # it: about 8 ns per byte per unit of size (1.6 s per MiB at size 196).
    condition = compile_condition("content", "matches", "a[ab]{190}c")
    rng = random.Random(1)
    text = "".join(rng.choice("ab") for _ in range(MIB // 8))
    held, took = _timed(condition, {"content": text})
    assert held is False
    assert took < 1.5, f"{took * 1000:.0f} ms for 128 KiB"


def test_text_that_is_not_valid_unicode_is_searched_not_raised_on() -> None:
    condition = compile_condition("content", "matches", "x$")
    assert condition.holds({"content": "\ud800x"}, "onCreate")
    assert not condition.holds({"content": "x\ud800"}, "onCreate")


def test_matches_is_a_search_in_rune_semantics() -> None:
    condition = compile_condition("content", "matches", "^caf.$")
    assert condition.holds({"content": "café"}, "onCreate")
    assert not condition.holds({"content": "café\n"}, "onCreate")  # `$` is the end, as \z


# ------------------------------------------------------------------ schema patterns


@pytest.mark.parametrize(
    ("definition", "path", "message"),
    [
        (
            {"pattern": "(a)\\1"},
            ("pattern",),
            "'(a)\\\\1' has a backreference or lookaround, which needs a backtracking engine",
        ),
        (
            {"properties": {"x": {"type": "string", "pattern": "^(?=a)"}}},
            ("properties", "x", "pattern"),
            "'^(?=a)' has a backreference or lookaround",
        ),
        (
            {"patternProperties": {"(?<!a)b": True}},
            ("patternProperties", "(?<!a)b"),
            "'(?<!a)b' has a backreference or lookaround",
        ),
        (
            {"pattern": "a{1000}{1000}"},
            ("pattern",),
            "'a{1000}{1000}' is too large for the linear-time engine",
        ),
    ],
)
def test_schema_patterns_a_linear_engine_refuses_are_problems(
    definition: dict[str, Any], path: tuple[str, ...], message: str
) -> None:
    [problem] = schema_problems(definition)
    assert problem.path == path
    assert problem.message.startswith(message)
    assert problem.message.endswith("schema patterns must run in linear time")
    assert problem.needs_backtracking


def test_an_invalid_schema_pattern_is_not_mistaken_for_a_backtracking_one() -> None:
    [problem] = schema_problems({"pattern": "(unclosed"})
    assert problem.message == "'(unclosed' is not a valid regular expression"
    assert not problem.needs_backtracking


@pytest.mark.parametrize("pattern", [r"^\p{L}+$", r"^[a-f0-9]{64}$", r"\u00e9", CATASTROPHIC])
def test_schema_patterns_a_linear_engine_runs_are_fine(pattern: str) -> None:
    assert schema_problems({"type": "string", "pattern": pattern}) == []


@pytest.mark.timeout(20)
def test_a_catastrophic_schema_pattern_on_a_mebibyte_takes_milliseconds() -> None:
    validator = SchemaValidator({"type": "string", "pattern": CATASTROPHIC})
    started = time.perf_counter()
    [violation] = validator.violations(HOSTILE)
    took = time.perf_counter() - started
    assert violation.message.endswith('!" does not match "^(\\w+\\s?)*$"')
    assert took < 0.1, f"{took * 1000:.0f} ms"


def test_a_refusing_validator_fails_every_instance_with_its_reason() -> None:
    validator = SchemaValidator.refusing("schema 's' is disabled: why")
    assert [str(v) for v in validator.violations({})] == ["(root): schema 's' is disabled: why"]
