"""Workflow compilation: every reference checked against roots and step order."""

from __future__ import annotations

from typing import Any

import pytest

from blobflow.core.compiler import CompiledWorkflow, compile_workflow
from blobflow.core.definitions import Workflow
from blobflow.errors import PathPart


def _compile(steps: list[dict[str, Any]], **extra: Any) -> tuple[CompiledWorkflow, list[str]]:
    workflow = Workflow.model_validate(
        {"id": "wf", "provider_id": "p", "name": "wf", "steps": steps, **extra}
    )
    problems: list[str] = []

    def report(path: tuple[PathPart, ...], message: str) -> None:
        problems.append(f"{'.'.join(map(str, path))}: {message}")

    return compile_workflow(workflow, report), problems


def _step(step_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "service": "studio", "endpoint": f"/{step_id}", **fields}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("$.input.blob_id", None),
        ("$.input", None),
        ("$.steps.first.output.a[0].b", None),
        ("$.steps.first.status", None),
        ("$.steps.first.error", None),
        ("$.execution.id", None),
        ("$.execution.event_id", None),
        ("$.provider_id", None),
        ("$.workflow.id", None),
        ("$.vars.token", None),
        ("$.vars", None),
        ("text {$.input.a} and {$.steps.first.output}", None),
        ("$", "refer to a root"),
        ("$.inputs.a", "unknown root 'inputs' (did you mean 'input'?)"),
        ("$.steps.first", "use $.steps.<id>.output, .status or .error"),
        ("$.steps.first.outputs", "use $.steps.<id>.output, .status or .error"),
        ("$.steps.second.output", "step 'second' does not come before this point"),
        ("$.steps.firts.output", "unknown step 'firts' (did you mean 'first'?)"),
        ("$.steps.third.output", "step 'third' does not come before this point"),
        ("$.steps.second_.output", "unknown step 'second_'"),
        ("$.execution", "use $.execution.id or $.execution.event_id"),
        ("$.execution.user", "use $.execution.id or $.execution.event_id"),
        ("$.workflow.name", "use $.workflow.id"),
        ("$.provider_id.x", "$.provider_id is text and has no fields"),
        ("$.vars.tokn", "unknown variable 'tokn' (did you mean 'token'?)"),
        ("$.vars.later", "unknown variable 'later'"),
        ("$.input.a b", "must be exactly one reference"),
    ],
)
def test_reference_rules_in_input_map(value: str, problem: str | None) -> None:
    steps = [
        _step("first", output_map={"token": "$.token"}, variables=["token"]),
        _step("second", input_map={"x": value}),
        _step("third", output_map={"later": "$.x"}, variables=["later"]),
    ]
    _, problems = _compile(steps)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1, problems
        assert problems[0].startswith("steps.1.input_map.x: ")
        assert problem in problems[0]


def test_condition_references_are_checked() -> None:
    _, problems = _compile([_step("a"), _step("b", condition="$.steps.c.output.ok == true")])
    assert problems == ["steps.1.condition: unknown step 'c' in '$.steps.c.output.ok'"]


def test_compensation_may_see_its_own_step() -> None:
    compensation = {"service": "studio", "endpoint": "/undo", "input_map": {}}
    compensation["input_map"] = {"id": "$.steps.a.output.id", "run": "$.execution.id"}
    _, problems = _compile([_step("a", compensation=compensation)])
    assert problems == []


def test_compensation_may_not_see_later_steps() -> None:
    compensation = {
        "service": "studio",
        "endpoint": "/undo",
        "input_map": {"x": "$.steps.b.output"},
    }
    _, problems = _compile([_step("a", compensation=compensation), _step("b")])
    assert problems == [
        "steps.0.compensation.input_map.x: step 'b' does not come before this point"
        " in '$.steps.b.output'"
    ]


def test_step_output_map_sees_the_response_body() -> None:
    compiled, problems = _compile([_step("a", output_map={"all": "$", "n": "$.items[0].n"})])
    assert problems == []
    output_map = compiled.steps[0].output_map
    assert output_map is not None
    assert output_map.evaluate({"items": [{"n": 3}]}) == {"all": {"items": [{"n": 3}]}, "n": 3}


def test_workflow_output_map_sees_every_step_and_variable() -> None:
    steps = [_step("a", output_map={"t": "$.t"}, variables=["t"]), _step("b")]
    _, problems = _compile(
        steps, output_map={"x": "$.steps.b.output", "t": "$.vars.t", "c": "$.steps.c.output"}
    )
    assert problems == ["output_map.c: unknown step 'c' in '$.steps.c.output'"]


def test_variables_must_be_output_keys() -> None:
    _, problems = _compile([_step("a", output_map={"t": "$.t"}, variables=["t", "u"])])
    assert problems == ["steps.0.variables.1: variable 'u' is not a key of output_map"]


def test_duplicate_step_ids() -> None:
    _, problems = _compile([_step("a"), _step("a")])
    assert problems == ["steps.1.id: duplicate step id 'a'"]


def test_nested_values_report_their_own_path() -> None:
    steps = [
        _step("a"),
        _step("b", input_map={"meta": {"list": ["ok", "$.steps.z.output"]}}),
    ]
    _, problems = _compile(steps)
    assert problems == ["steps.1.input_map.meta.list.1: unknown step 'z' in '$.steps.z.output'"]


def test_compiled_values_evaluate_against_a_context() -> None:
    compiled, _ = _compile(
        [
            _step("a"),
            _step(
                "b",
                input_map={"greeting": "Hi {$.input.name}, run {$.execution.id}", "n": 2},
                condition="$.steps.a.status == 'completed' && $.input.n > 1",
            ),
        ]
    )
    step = compiled.steps[1]
    context = {
        "input": {"name": "Ada", "n": 2},
        "steps": {"a": {"status": "completed", "output": {}, "error": None}},
        "execution": {"id": "x1", "event_id": "e1"},
    }
    assert step.input_map.evaluate(context) == {"greeting": "Hi Ada, run x1", "n": 2}
    assert step.condition is not None
    assert step.condition.evaluate(context) is True
