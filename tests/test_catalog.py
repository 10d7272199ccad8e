"""Catalogs: sets of definitions checked together, with content hashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from blobflow.core.catalog import Catalog, build_catalog
from blobflow.core.sources import SourceDocument, read_paths
from blobflow.errors import DefinitionError

ROOT = Path(__file__).resolve().parent.parent


def _examples() -> list[SourceDocument]:
    documents, problems = read_paths([ROOT])
    assert problems == []
    return documents


def _workflow(workflow_id: str = "wf", **extra: Any) -> SourceDocument:
    data = {
        "id": workflow_id,
        "provider_id": "p",
        "name": "Workflow",
        "steps": [{"id": "a", "service": "studio", "endpoint": "/a"}],
        **extra,
    }
    return SourceDocument("workflow", f"{workflow_id}.yaml", data)


def _provider(provider_id: str, *bindings: dict[str, Any]) -> SourceDocument:
    data = {"provider": {"id": provider_id, "name": provider_id}, "workflows": list(bindings)}
    return SourceDocument("provider", f"{provider_id}.yaml", data)


def _problems(documents: list[SourceDocument]) -> list[str]:
    with pytest.raises(DefinitionError) as raised:
        build_catalog(documents)
    return [str(p) for p in raised.value.problems]


def test_examples_build() -> None:
    catalog = build_catalog(_examples())
    assert set(catalog.workflows) == {"blob_processing_workflow", "book_chapter_expansion"}
    assert set(catalog.providers) == {"book-writer", "memmie-studio"}
    assert catalog.active == frozenset(catalog.workflows)
    assert len(catalog.hashes) == 6


def test_same_content_hashes_alike_whatever_the_spelling() -> None:
    plain = build_catalog([_workflow()])
    spelled_out = build_catalog(
        [
            _workflow(
                active=True,
                description="",
                steps=[
                    {
                        "id": "a",
                        "service": "studio",
                        "endpoint": "/a",
                        "method": "post",
                        "retry": {"max_attempts": 1},
                        "timeout_seconds": 30,
                    }
                ],
            )
        ]
    )
    assert plain.hashes == spelled_out.hashes


def test_changed_content_changes_the_hash() -> None:
    before = build_catalog([_workflow()]).hashes[("workflow", "wf")]
    after = build_catalog([_workflow(description="now documented")]).hashes[("workflow", "wf")]
    assert before != after


def test_duplicate_ids_name_both_files() -> None:
    assert _problems([_workflow(), _workflow()]) == [
        "wf.yaml: id: duplicate workflow id 'wf' (also in wf.yaml)"
    ]


def test_an_invalid_workflow_is_not_reported_again_as_unknown() -> None:
    broken = _workflow(steps=[])
    provider = _provider("p", {"workflow_id": "wf"})
    problems = _problems([broken, provider])
    assert problems == ["wf.yaml: steps: must have at least 1 item after validation, not 0"]


def test_inactive_workflows_never_match() -> None:
    trigger = {"event": "onCreate"}
    catalog = build_catalog(
        [
            _workflow("on"),
            _workflow("off", active=False),
            _provider("p", {"workflow_id": "on", "triggers": [trigger]}),
            _provider("q", {"workflow_id": "off", "triggers": [trigger]}),
        ]
    )
    matched = catalog.match({"event_id": "e", "blob_id": "b", "user_id": "u"}, "onCreate")
    assert [b.workflow_id for b in matched] == ["on"]


def test_bindings_keep_their_defaults_and_order() -> None:
    trigger = {"event": "onCreate"}
    catalog: Catalog = build_catalog(
        [
            _workflow("w1"),
            _workflow("w2"),
            _provider(
                "p",
                {"workflow_id": "w1", "triggers": [trigger], "input": {"style": "noir"}},
                {"workflow_id": "w2", "triggers": [trigger], "priority": 5},
            ),
        ]
    )
    matched = catalog.match({}, "onCreate")
    assert [(b.workflow_id, b.priority) for b in matched] == [("w2", 5), ("w1", 0)]
    assert matched[1].input == {"style": "noir"}


def test_schema_validators_are_compiled() -> None:
    catalog = build_catalog(_examples())
    validator = catalog.validators["blob_input_schema_v1"]
    assert validator.violations({"blob_id": "b", "user_id": "u"}) == []
    assert [str(v) for v in validator.violations({"blob_id": ""})] == [
        '(root): "user_id" is a required property',
        'blob_id: "" is shorter than 1 character',
    ]


# -- patterns this version refuses: in new documents, and in registered ones -----------------

BACKREFERENCE = r"(a)\1"


def _matching(pattern: str) -> dict[str, Any]:
    condition = {"field": "metadata.type", "operator": "matches", "value": pattern}
    return {"event": "onCreate", "conditions": [condition]}


def _schema(schema_id: str, pattern: str) -> SourceDocument:
    data = {
        "id": schema_id,
        "provider_id": "p",
        "name": "Input",
        "type": "input",
        "definition": {"type": "object", "properties": {"title": {"pattern": pattern}}},
    }
    return SourceDocument("schema", f"{schema_id}.yaml", data)


def test_a_pattern_re2_refuses_is_a_problem_of_its_file() -> None:
    provider = _provider("p", {"workflow_id": "wf", "triggers": [_matching(BACKREFERENCE)]})
    assert _problems([_workflow(), provider]) == [
        "p.yaml: workflows[0].triggers[0].conditions[0].value: operator 'matches' has an "
        r"invalid regular expression '(a)\\1': invalid escape sequence: \1 "
        "(RE2 has no backreferences)"
    ]


def test_a_schema_pattern_the_linear_engine_refuses_is_a_problem_of_its_file() -> None:
    assert _problems([_schema("s", "(?<=a)b")]) == [
        "s.yaml: definition.properties.title.pattern: not a valid JSON Schema 2020-12: "
        "'(?<=a)b' has a backreference or lookaround, which needs a backtracking engine: "
        "schema patterns must run in linear time"
    ]


def test_registered_bindings_with_refused_patterns_are_disabled_and_the_rest_loads() -> None:
    provider = _provider(
        "p",
        {"workflow_id": "w1", "triggers": [_matching(BACKREFERENCE), {"event": "onCreate"}]},
        {"workflow_id": "w2", "triggers": [_matching("^chap")]},
    )
    catalog = build_catalog((), registered=[_workflow("w1"), _workflow("w2"), provider])
    [disabled] = catalog.disabled_bindings
    assert (disabled.provider_id, disabled.workflow_id) == ("p", "w1")
    assert disabled.reason.startswith(
        "workflows[0].triggers[0].conditions[0].value: operator 'matches' has an invalid "
        r"regular expression '(a)\\1': invalid escape sequence: \1"
    )
    # Its other trigger would match too: a disabled binding has none left.
    matched = catalog.match({"metadata": {"type": "chapter"}}, "onCreate")
    assert [b.workflow_id for b in matched] == ["w2"]
    # Still bound, for runs started by hand with the binding's defaults.
    assert [b.workflow_id for b in catalog.bindings] == ["w1", "w2"]


def test_new_documents_are_held_to_todays_rules_beside_registered_ones() -> None:
    registered = [_workflow("w1"), _provider("p", {"workflow_id": "w1", "triggers": []})]
    incoming = _provider("q", {"workflow_id": "w1", "triggers": [_matching("(?=a)")]})
    with pytest.raises(DefinitionError) as raised:
        build_catalog([incoming], registered=registered)
    [problem] = raised.value.problems
    assert problem.source == "q.yaml"
    assert "RE2 has no lookahead" in problem.message


def test_a_registered_schema_with_a_refused_pattern_is_disabled_with_what_uses_it() -> None:
    workflow = _workflow("w1", input_schema_id="s")
    provider = _provider("p", {"workflow_id": "w1", "triggers": [{"event": "onCreate"}]})
    catalog = build_catalog((), registered=[_schema("s", "(?=a)"), workflow, provider])
    [schema] = catalog.disabled_schemas
    assert schema.schema_id == "s"
    assert schema.reason.startswith("definition.properties.title.pattern: '(?=a)' has a")
    # Nothing is validated against it, nothing skips it: every instance fails, saying why.
    [violation] = catalog.validators["s"].violations({"title": "a"})
    assert violation.message == f"schema 's' is disabled: {schema.reason}"
    [binding] = catalog.disabled_bindings
    assert binding.reason == (
        f"workflows[0].workflow_id: workflow 'w1' uses schema 's', which is disabled: "
        f"{schema.reason}"
    )
    assert catalog.match({}, "onCreate") == []


def test_a_new_workflow_may_not_use_a_disabled_schema() -> None:
    with pytest.raises(DefinitionError) as raised:
        build_catalog([_workflow("w1", input_schema_id="s")], registered=[_schema("s", "(?=a)")])
    [problem] = raised.value.problems
    assert (problem.source, problem.path) == ("w1.yaml", ("input_schema_id",))
    assert problem.message.startswith("schema 's' is disabled (definition.properties.title")
    assert problem.message.endswith("; register a fixed one")
