"""Workload shapes: the standard workflow stretched to other step and delta counts.

The standard shape (4 steps, 3 deltas) is `bench/definitions`, written by
hand. The others are generated into a folder of their own: `steps - 1`
validation calls, then `/deltas/generate` asked for `deltas` operations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.contenders import DEFINITIONS


@dataclass(frozen=True)
class Shape:
    steps: int = 4
    deltas: int = 3

    @property
    def standard(self) -> bool:
        return self == Shape()

    @property
    def label(self) -> str:
        steps = f"{self.steps} step{'s' * (self.steps > 1)}"
        return f"{steps}, {self.deltas} delta{'s' * (self.deltas > 1)}"


def workflow(shape: Shape) -> dict[str, Any]:
    calls: list[dict[str, Any]] = [
        {
            "id": f"validate_{number}",
            "service": "bench",
            "endpoint": "/blobs/validate",
            "input_map": {"blob_id": "$.input.blob_id"},
        }
        for number in range(1, shape.steps)
    ]
    generate = {
        "id": "generate",
        "service": "bench",
        "endpoint": "/deltas/generate",
        "input_map": {"blob_id": "$.input.blob_id", "deltas": shape.deltas},
        "output_map": {"delta_operations": "$.delta_operations"},
    }
    return {
        "id": "bench_workflow",
        "provider_id": "bench",
        "name": f"Benchmark workflow, {shape.label}",
        "active": True,
        "steps": [*calls, generate],
    }


def definitions(shape: Shape, folder: Path) -> Path:
    """The definitions folder for `shape`: the committed one for the standard shape."""
    if shape.standard:
        return DEFINITIONS
    for kind in ("providers", "workflows", "schemas"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    provider = DEFINITIONS / "providers" / "bench.yaml"
    (folder / "providers" / "bench.yaml").write_text(provider.read_text())
    (folder / "workflows" / "bench.yaml").write_text(yaml.safe_dump(workflow(shape)))
    return folder
