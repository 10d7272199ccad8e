"""`MemoryPublisher`: the delta events the engine publishes, recorded in memory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tests.memory.store import Document, bson_roundtrip


class MemoryPublisher:
    """`blobflow.runtime.ports.DeltaPublisher` keeping what it published.

    Set `confirm = False` to have it report the events unconfirmed (nothing
    is recorded), or `error` to have it raise that error.
    """

    def __init__(self) -> None:
        self.batches: list[list[Document]] = []
        self.confirm = True
        self.error: BaseException | None = None

    async def publish(self, deltas: Sequence[Mapping[str, Any]]) -> bool:
        if self.error is not None:
            raise self.error
        if not self.confirm:
            return False
        self.batches.append([bson_roundtrip(delta) for delta in deltas])
        return True

    @property
    def published(self) -> list[Document]:
        """Every delta event confirmed, in order."""
        return [delta for batch in self.batches for delta in batch]
