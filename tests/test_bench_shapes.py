"""The benchmark's workload shapes compile into valid definitions with the asked-for counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.contenders import DEFINITIONS
from bench.downstream import ENDPOINTS
from bench.shapes import Shape, definitions
from blobflow.core.catalog import build_catalog
from blobflow.core.sources import read_paths


def test_the_standard_shape_is_the_committed_definitions(tmp_path: Path) -> None:
    assert definitions(Shape(), tmp_path) == DEFINITIONS
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("steps", "deltas"), [(1, 3), (16, 3), (4, 1), (4, 100)])
def test_a_generated_shape_compiles_with_its_counts(
    tmp_path: Path, steps: int, deltas: int
) -> None:
    documents, problems = read_paths([definitions(Shape(steps, deltas), tmp_path)])
    assert problems == []
    workflow = build_catalog(documents).workflows["bench_workflow"]
    assert len(workflow.steps) == steps
    assert workflow.steps[-1].spec.input_map["deltas"] == deltas


@pytest.mark.parametrize("deltas", [1, 10, 100])
def test_the_stub_answers_the_asked_number_of_operations(deltas: int) -> None:
    answer = ENDPOINTS["/deltas/generate"]({"blob_id": "b", "deltas": deltas})
    assert len(answer["delta_operations"]) == deltas
    assert "created_blobs" not in answer


def test_the_stub_gives_the_standard_three_deltas_by_default() -> None:
    answer = ENDPOINTS["/deltas/generate"]({"blob_id": "b"})
    assert len(answer["delta_operations"]) + len(answer["created_blobs"]) == 3
