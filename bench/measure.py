"""What a run measures: process CPU and memory from /proc, percentiles, and the check
that the job was done exactly (so many deltas and delta events per event, no duplicates)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from pymongo.asynchronous.database import AsyncDatabase

DELTAS_PER_EVENT = 3
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User and system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def memory_mib(pid: int, field: str) -> float:
    """A memory figure of /proc/<pid>/status in MiB: VmRSS (now), VmHWM (the peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib(pid: int) -> float:
    return memory_mib(pid, "VmHWM")


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile; `share` in 0..1."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = math.ceil(share * len(ordered))  # 1-based: the smallest value covering `share`
    return ordered[max(0, min(len(ordered), rank) - 1)]


@dataclass(frozen=True)
class Outcome:
    deltas: int
    delta_events: int
    problems: tuple[str, ...]


async def verify(
    db: AsyncDatabase[dict[str, Any]],
    js: JetStreamContext,
    events: int,
    deltas_per_event: int = DELTAS_PER_EVENT,
) -> Outcome:
    """Exactly `deltas_per_event` deltas and delta events per event, no duplicates,
    no event missing."""
    deltas = db["deltas"]
    stored = await deltas.count_documents({})
    distinct = await deltas.distinct("_id")
    per_event = await deltas.distinct("event_id")
    published = (await js.stream_info("DELTAS")).state.messages
    expected = deltas_per_event * events
    problems = [
        f"{name}: {value} (expected {want})"
        for name, value, want in (
            ("deltas stored", stored, expected),
            ("distinct delta ids", len(distinct), expected),
            ("events with deltas", len(per_event), events),
            ("delta events", published, expected),
        )
        if value != want
    ]
    return Outcome(stored, published, tuple(problems))
