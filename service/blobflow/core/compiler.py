"""Compiling a workflow document: expressions parsed once, every reference checked.

A workflow's expressions see the execution context
`{input, steps, execution, provider_id, workflow, vars}`; a step's
`output_map` sees only the response body. References to steps must point
backwards (a compensation may also see its own step), and `$.vars.<name>`
must name a variable an earlier step declares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from blobflow.core.conditions import Condition, parse_condition
from blobflow.core.definitions import Step, Workflow
from blobflow.core.expressions import ListValue, MapValue, Reference, Value, compile_value
from blobflow.errors import ExpressionError, PathPart, did_you_mean

Report = Callable[[tuple[PathPart, ...], str], None]

STEP_FIELDS = ("output", "status", "error")
ROOTS = ("input", "steps", "execution", "provider_id", "workflow", "vars")


@dataclass(frozen=True, slots=True)
class CompiledStep:
    spec: Step
    input_map: Value
    output_map: Value | None
    condition: Condition | None
    compensation_input: Value | None


@dataclass(frozen=True, slots=True)
class CompiledWorkflow:
    spec: Workflow
    steps: tuple[CompiledStep, ...]
    output_map: Value | None

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass(frozen=True, slots=True)
class _Scope:
    """What a reference may see: the steps before it and their variables."""

    steps: tuple[str, ...]
    later_steps: frozenset[str]
    variables: frozenset[str]


def compile_workflow(workflow: Workflow, report: Report) -> CompiledWorkflow:
    """Compile `workflow`, reporting each problem with its path inside the document."""
    all_ids = [step.id for step in workflow.steps]
    seen: set[str] = set()
    steps: list[CompiledStep] = []
    for index, step in enumerate(workflow.steps):
        at: tuple[PathPart, ...] = ("steps", index)
        if step.id in seen:
            report((*at, "id"), f"duplicate step id {step.id!r}")
        seen.add(step.id)
        before = tuple(all_ids[:index])
        scope = _scope(workflow.steps[:index], before, all_ids)
        own_scope = _scope(workflow.steps[: index + 1], (*before, step.id), all_ids)
        steps.append(_compile_step(step, at, scope, own_scope, report))
    output_map = None
    if workflow.output_map is not None:
        scope = _scope(workflow.steps, tuple(all_ids), all_ids)
        output_map = _workflow_value(workflow.output_map, ("output_map",), scope, report)
    return CompiledWorkflow(workflow, tuple(steps), output_map)


def _compile_step(
    step: Step, at: tuple[PathPart, ...], scope: _Scope, own_scope: _Scope, report: Report
) -> CompiledStep:
    input_map = _workflow_value(step.input_map, (*at, "input_map"), scope, report)
    condition = None
    if step.condition is not None:
        try:
            condition = parse_condition(step.condition)
        except ExpressionError as exc:
            report((*at, "condition"), _expression_message(exc))
        else:
            _check_references(condition.references(), (*at, "condition"), scope, report)
    output_map = None
    if step.output_map is not None:
        # Here `$` is the response body, so any path is fine.
        output_map = _value(step.output_map, (*at, "output_map"), report)
    if isinstance(output_map, MapValue):
        keys = {key for key, _ in output_map.items}
        for i, name in enumerate(step.variables):
            if name not in keys:
                report((*at, "variables", i), f"variable {name!r} is not a key of output_map")
    compensation = None
    if step.compensation is not None:
        compensation = _workflow_value(
            step.compensation.input_map, (*at, "compensation", "input_map"), own_scope, report
        )
    return CompiledStep(step, input_map, output_map, condition, compensation)


def _scope(steps: Sequence[Step], ids: tuple[str, ...], all_ids: Iterable[str]) -> _Scope:
    variables = frozenset(name for step in steps for name in step.variables)
    return _Scope(ids, frozenset(all_ids) - set(ids), variables)


def _value(raw: object, at: tuple[PathPart, ...], report: Report) -> Value:
    problems: list[tuple[tuple[PathPart, ...], ExpressionError]] = []
    value = compile_value(raw, problems)
    for where, exc in problems:
        report((*at, *where), _expression_message(exc))
    return value


def _workflow_value(raw: object, at: tuple[PathPart, ...], scope: _Scope, report: Report) -> Value:
    value = _value(raw, at, report)
    for where, leaf in _leaves(value, at):
        _check_references(leaf.references(), where, scope, report)
    return value


def _leaves(value: Value, at: tuple[PathPart, ...]) -> Iterator[tuple[tuple[PathPart, ...], Value]]:
    """Each leaf of a compiled value with its path, so problems point at the key."""
    if isinstance(value, MapValue):
        for key, item in value.items:
            yield from _leaves(item, (*at, key))
    elif isinstance(value, ListValue):
        for index, item in enumerate(value.items):
            yield from _leaves(item, (*at, index))
    else:
        yield at, value


def _check_references(
    references: Iterable[Reference], at: tuple[PathPart, ...], scope: _Scope, report: Report
) -> None:
    for reference in references:
        message = reference_problem(reference, scope)
        if message:
            report(at, message)


def reference_problem(reference: Reference, scope: _Scope) -> str | None:
    """Why `reference` cannot be evaluated in a workflow context, or None."""
    path = reference.path
    text = reference.text
    if not path:
        return f"refer to a root such as $.input or $.steps.<id>.output in {text!r}"
    root = path[0]
    if root not in ROOTS:
        return f"unknown root {root!r}{did_you_mean(root, ROOTS)} in {text!r}"
    if root == "steps":
        return _step_problem(text, path, scope)
    if root == "execution" and (len(path) != 2 or path[1] not in ("id", "event_id")):
        return f"use $.execution.id or $.execution.event_id in {text!r}"
    if root == "workflow" and path[1:] != ("id",):
        return f"use $.workflow.id in {text!r}"
    if root == "provider_id" and len(path) != 1:
        return f"$.provider_id is text and has no fields in {text!r}"
    if root == "vars" and len(path) > 1 and path[1] not in scope.variables:
        name = str(path[1])
        return f"unknown variable {name!r}{did_you_mean(name, scope.variables)} in {text!r}"
    return None


def _step_problem(text: str, path: tuple[PathPart, ...], scope: _Scope) -> str | None:
    if len(path) < 3 or path[2] not in STEP_FIELDS:
        return f"use $.steps.<id>.output, .status or .error in {text!r}"
    step_id = str(path[1])
    if step_id in scope.steps:
        return None
    if step_id in scope.later_steps:
        return f"step {step_id!r} does not come before this point in {text!r}"
    return f"unknown step {step_id!r}{did_you_mean(step_id, scope.steps)} in {text!r}"


def _expression_message(exc: ExpressionError) -> str:
    return f"{exc.reason} at position {exc.position} in {exc.text!r}"
