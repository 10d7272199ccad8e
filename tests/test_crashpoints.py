"""Crash points: off by default, and a process that reaches an armed one is gone."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from blobflow.core.deltas import DeltaDraft
from blobflow.core.records import Execution, LogLine, StepRecord
from blobflow.runtime.crashpoints import VARIABLE, CrashingPersistence, CrashingSink, armed
from tests.support import ROOT


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def checkpoint(self, execution: Execution, logs: Sequence[LogLine]) -> None:
        self.calls.append("checkpoint")

    async def store_deltas(
        self, execution: Execution, drafts: Sequence[DeltaDraft]
    ) -> Sequence[dict[str, Any]]:
        self.calls.append("store_deltas")
        return [{"_id": "d1"}]

    async def publish(self, deltas: Sequence[Mapping[str, Any]]) -> bool:
        self.calls.append("publish")
        return True


@pytest.mark.parametrize(
    ("raw", "points"),
    [
        ("", frozenset()),
        ("deltas_stored", {"deltas_stored"}),
        (" deltas_stored , step_called:a ,", {"deltas_stored", "step_called:a"}),
    ],
)
def test_armed_reads_the_variable(
    monkeypatch: pytest.MonkeyPatch, raw: str, points: frozenset[str]
) -> None:
    monkeypatch.setenv(VARIABLE, raw)
    armed.cache_clear()
    try:
        assert armed() == points
    finally:
        armed.cache_clear()


@pytest.mark.asyncio
async def test_points_not_armed_pass_every_call_through() -> None:
    inner = Recorder()
    execution = Execution(
        id="x", event_id="e", provider_id="p", workflow_id="w", workflow_version=1,
        blob_id="b", user_id="u", priority=0, input={},
        steps=(StepRecord(id="a", status="completed"),),
    )  # fmt: skip
    persistence = CrashingPersistence(inner, frozenset({"step_called:other"}))
    await persistence.checkpoint(execution, [])
    assert await persistence.store_deltas(execution, []) == [{"_id": "d1"}]
    assert await CrashingSink(inner, frozenset()).publish([]) is True
    assert inner.calls == ["checkpoint", "store_deltas", "publish"]


def test_an_armed_point_kills_the_process_outright() -> None:
    script = (
        "from blobflow.runtime.crashpoints import crash_at\n"
        "crash_at('deltas_stored', frozenset({'deltas_stored'}))\n"
        "print('survived')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == -9
    assert "survived" not in done.stdout
