"""Group commit: concurrent writes of the same kind leave as one command.

While one batch is on its way to the database the next callers queue up;
the first of them, once the way is free, sends everything queued in one
command and hands each caller its own result. A lone writer waits for
nobody: batching costs no latency, it only appears under load, where it
saves round trips (and, on MongoDB-wire servers that pay per command,
server time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# What a flush gives back for each item, in order: its result, or the exception
# that item alone must raise (one bad write must not fail its neighbours).
Flush = Callable[[Sequence[Item]], Awaitable[Sequence[Result | Exception]]]


class GroupCommit(Generic[Item, Result]):
    def __init__(self, flush: Flush[Item, Result], *, max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._flush = flush
        self.max_batch = max_batch
        self._lock = asyncio.Lock()  # FIFO: callers lead in the order they came
        self._queued: list[tuple[Item, asyncio.Future[Result]]] = []
        self._in_flight: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        """Write `item` with whatever else is queued; its own result or exception.

        A caller cancelled before its batch left takes its item out: it is
        not written. Once the batch has left, it is written all the same.
        """
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queued.append((item, future))
        try:
            async with self._lock:
                # Every caller ahead has led already, so an item still queued is
                # the oldest one; otherwise it left with a batch whose leader was
                # cancelled, and its outcome is on its way.
                if self._queued and self._queued[0][1] is future:
                    await self._lead()
            return await future
        except asyncio.CancelledError:
            self._queued = [entry for entry in self._queued if entry[1] is not future]
            future.cancel()
            raise

    async def settle(self) -> None:
        """Wait for the batches on their way, including those whose leader was cancelled."""
        while self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def _lead(self) -> None:
        batch = self._queued[: self.max_batch]
        del self._queued[: self.max_batch]
        sending = asyncio.ensure_future(self._send(batch))
        self._in_flight.add(sending)
        sending.add_done_callback(self._in_flight.discard)
        # Shielded: the leader cancelled meanwhile (shutdown) must not strand
        # the others of its batch, whose write is on its way.
        await asyncio.shield(sending)

    async def _send(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = list(await self._flush([item for item, _ in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"a flush of {len(batch)} gave {len(results)} results")
        except Exception as exc:  # the batch as a whole failed: each caller hears why
            results = [exc] * len(batch)
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
