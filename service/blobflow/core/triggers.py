"""Trigger matching: which provider workflows a blob event starts (CONTRACT §5.3).

Conditions are validated once, when definitions load, by `compile_condition`,
so matching an event is a pure function of already-checked data. Every
comparison is type-strict, as JSON: `1 == 1.0`, but `true != 1` and `"1" != 1`.
`matches` runs RE2 (`core.regexes`): linear in the text, whatever the pattern.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, cast, get_args

from blobflow.core.jsonvalues import MISSING, compare, lookup, strict_equal
from blobflow.core.jsonvalues import kind as json_kind
from blobflow.core.regexes import LinearPattern, PatternRefused, compile_linear
from blobflow.errors import TriggerError

EventKind: TypeAlias = Literal["onCreate", "onUpdate"]
Operator: TypeAlias = Literal[
    "eq", "ne", "in", "not_in", "contains", "exists",
    "gt", "gte", "lt", "lte", "matches", "changed",
]  # fmt: skip
PREVIOUS_FIELDS = frozenset({"metadata", "content"})
OPERATORS: frozenset[str] = frozenset(get_args(Operator))

# Spellings from other query languages that difflib cannot relate to ours.
_ALIASES: dict[str, str] = {
    "==": "eq", "=": "eq", "!=": "ne", "<>": "ne", "neq": "ne", "not_eq": "ne",
    ">": "gt", ">=": "gte", "<": "lt", "<=": "lte", "regex": "matches", "~": "matches",
}  # fmt: skip


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str):
        return isinstance(expected, str) and expected in actual
    if isinstance(actual, list | tuple):
        return any(strict_equal(item, expected) for item in actual)
    return False


def _ordered(test: Callable[[int], bool]) -> Callable[[Any, Any], bool]:
    def check(actual: Any, expected: Any) -> bool:
        order = compare(actual, expected)
        return order is not None and test(order)

    return check


# Each check sees a field that is present (possibly null); absence is decided
# in `holds`, because it means "false" for some operators and "true" for others.
_CHECKS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": strict_equal,
    "in": lambda actual, options: any(strict_equal(actual, o) for o in options),
    "contains": _contains,
    "gt": _ordered(lambda order: order > 0),
    "gte": _ordered(lambda order: order >= 0),
    "lt": _ordered(lambda order: order < 0),
    "lte": _ordered(lambda order: order <= 0),
}
_NEGATIONS: dict[str, str] = {"ne": "eq", "not_in": "in"}


@dataclass(frozen=True, slots=True)
class TriggerCondition:
    """One compiled `{field, operator, value}`; build it with `compile_condition`."""

    field: tuple[str, ...]
    operator: Operator
    value: Any
    pattern: LinearPattern | None = None

    def holds(self, event: Mapping[str, Any], kind: EventKind) -> bool:
        # lookup only descends into real dicts; events are dicts in practice.
        root = event if isinstance(event, dict) else dict(event)
        actual = lookup(root, self.field)
        op = self.operator
        if op == "changed":
            return kind == "onUpdate" and _changed(actual, root.get("previous"), self.field)
        if op == "exists":
            return (actual is not MISSING) is self.value
        if op == "matches":
            assert self.pattern is not None  # compile_condition always sets it
            return isinstance(actual, str) and self.pattern.search(actual)
        if op in _NEGATIONS:
            return actual is MISSING or not _CHECKS[_NEGATIONS[op]](actual, self.value)
        return actual is not MISSING and _CHECKS[op](actual, self.value)


def _changed(actual: Any, previous: Any, field: tuple[str, ...]) -> bool:
    # `previous` holds only {metadata, content}, which mirror the event's own
    # keys, so the same path reaches the old value.
    before = lookup(previous, field) if isinstance(previous, dict) else MISSING
    if actual is MISSING or before is MISSING:
        return (actual is MISSING) != (before is MISSING)
    return not strict_equal(actual, before)


@dataclass(frozen=True, slots=True)
class Trigger:
    """Fires on events of kind `event` for which every condition holds."""

    event: EventKind
    conditions: tuple[TriggerCondition, ...]

    def matches(self, event: Mapping[str, Any], kind: EventKind) -> bool:
        return kind == self.event and all(c.holds(event, kind) for c in self.conditions)


@dataclass(frozen=True, slots=True)
class Binding:
    """A provider's workflow with the triggers that start it.

    `order` is the binding's position in the definitions; it settles ties
    so that runs are ordered the same way on every replica.
    """

    provider_id: str
    workflow_id: str
    priority: int
    input: Mapping[str, Any]
    triggers: tuple[Trigger, ...]
    order: int = 0


def _is_json(value: Any) -> bool:
    # A non-finite float never equals or orders sensibly and no JSON event
    # can carry one, so a condition on it could only mislead.
    found = json_kind(value)
    if found is None:
        return False
    if found == "number":
        return math.isfinite(value)
    if found == "array":
        return all(_is_json(item) for item in value)
    if found == "object":
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return True


def _check_operator(operator: Any) -> Operator:
    if isinstance(operator, str) and operator in OPERATORS:
        return cast(Operator, operator)
    valid = ", ".join(sorted(OPERATORS))
    if not isinstance(operator, str):
        raise TriggerError(f"operator must be a string; expected one of {valid}", "operator")
    lowered = operator.strip().lower()
    guess = _ALIASES.get(lowered) or next(
        iter(difflib.get_close_matches(lowered, OPERATORS, n=1, cutoff=0.5)), None
    )
    hint = f" (did you mean {guess!r}?)" if guess else ""
    raise TriggerError(f"unknown operator {operator!r}{hint}; expected one of {valid}", "operator")


def _check_field(field: Any) -> tuple[str, ...]:
    if not isinstance(field, str) or not field:
        raise TriggerError("field must be a non-empty dotted path such as metadata.type", "field")
    parts = tuple(field.split("."))
    if "" in parts:
        raise TriggerError(f"field {field!r} has an empty segment", "field")
    return parts


def compile_condition(field: str, operator: str, value: Any = MISSING) -> TriggerCondition:
    """Validate one YAML condition; `value` is MISSING when the key is absent.

    Raises TriggerError whose `part` names the key at fault.
    """
    path = _check_field(field)
    op = _check_operator(operator)

    def bad(message: str) -> TriggerError:
        return TriggerError(f"operator {op!r} {message}", "value")

    given = value is not MISSING
    if given and not _is_json(value):
        raise TriggerError(f"value {value!r} is not a JSON value", "value")
    got = f", got {json_kind(value)}" if given else ""
    pattern: LinearPattern | None = None

    if op == "changed":
        if given:
            raise bad("takes no value")
        if path[0] not in PREVIOUS_FIELDS:
            # `previous` holds only these, so any other field would count as
            # changed on every update.
            message = "operator 'changed' works on metadata and content fields only"
            raise TriggerError(message, "field")
        value = None
    elif op == "exists":
        if not given:
            value = True
        elif not isinstance(value, bool):
            raise bad(f"takes true or false{got}")
    elif not given:
        raise bad("needs a value")
    elif op in ("in", "not_in"):
        if json_kind(value) != "array":
            raise bad(f"needs an array value{got}")
        value = tuple(value)
    elif op in ("gt", "gte", "lt", "lte"):
        if json_kind(value) not in ("number", "string"):
            raise bad(f"needs a number or a string value{got}")
    elif op == "matches":
        if not isinstance(value, str):
            raise bad(f"needs a string value (a regular expression){got}")
        try:
            pattern = compile_linear(value)
        except PatternRefused as exc:
            raise bad(f"has an invalid regular expression {value!r}: {exc}") from None
    return TriggerCondition(path, op, value, pattern)


def _eligible(event: Mapping[str, Any], provider_id: str) -> bool:
    # A producer that names no providers addresses all of them; a malformed
    # list addresses none rather than everybody.
    listed = event.get("provider_ids")
    if listed is None:
        return True
    return isinstance(listed, list | tuple) and provider_id in listed


def match_bindings(
    event: Mapping[str, Any],
    kind: EventKind,
    bindings: Iterable[Binding],
    active: Container[str],
) -> list[Binding]:
    """The bindings this event starts, highest priority first.

    Ties go by provider id, then definition order, so every replica starts
    the same executions in the same order.
    """
    matched = [
        b
        for b in bindings
        if _eligible(event, b.provider_id)
        and b.workflow_id in active
        and any(t.matches(event, kind) for t in b.triggers)
    ]
    matched.sort(key=lambda b: (-b.priority, b.provider_id, b.order))
    return matched
