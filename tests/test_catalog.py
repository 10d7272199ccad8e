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
