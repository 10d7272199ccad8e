"""Leases: which worker runs an execution, and the epoch that fences out the ones before.

A worker writes to a running execution only while its lease holds; a claim
by another worker starts a new epoch, and every write of an older one then
matches nothing (`LeaseLost`).
"""

from __future__ import annotations

from dataclasses import dataclass

from blobflow.core.records import Execution


@dataclass(frozen=True, slots=True)
class Lease:
    execution_id: str
    owner: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Claimed:
    """What one claim round took, and whether more free executions may be waiting."""

    leased: list[tuple[Execution, Lease]]
    more: bool
