"""Group commit: concurrent callers share one flush, and each gets its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from blobflow.group_commit import GroupCommit


class Recorder:
    """A flush that records its batches; `gate` holds the first one open."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def flush(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        self.entered.set()
        await self.gate.wait()
        return [ValueError(f"odd {item}") if item % 2 else item * 10 for item in items]


async def _hold_first_batch(commit: GroupCommit[int, int], recorder: Recorder) -> asyncio.Task[int]:
    recorder.gate.clear()
    first = asyncio.create_task(commit.submit(0))
    await recorder.entered.wait()
    return first


@pytest.mark.asyncio
async def test_a_lone_caller_flushes_at_once() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.flush)
    assert await commit.submit(4) == 40
    assert recorder.batches == [[4]]


@pytest.mark.asyncio
async def test_callers_that_arrive_during_a_flush_leave_together_in_the_next() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.flush)
    first = await _hold_first_batch(commit, recorder)
    rest = [asyncio.create_task(commit.submit(n)) for n in (2, 4, 6)]
    await asyncio.sleep(0)
    recorder.gate.set()
    assert await first == 0
    assert [await task for task in rest] == [20, 40, 60]
    assert recorder.batches == [[0], [2, 4, 6]]


@pytest.mark.asyncio
async def test_each_caller_gets_its_own_exception() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.flush)
    first = await _hold_first_batch(commit, recorder)
    good, bad = asyncio.create_task(commit.submit(2)), asyncio.create_task(commit.submit(3))
    await asyncio.sleep(0)
    recorder.gate.set()
    await first
    assert await good == 20
    with pytest.raises(ValueError, match="odd 3"):
        await bad
    assert recorder.batches[1] == [2, 3]


@pytest.mark.asyncio
async def test_a_failed_flush_fails_its_batch_only() -> None:
    calls = 0

    async def flaky(items: Sequence[int]) -> list[int | Exception]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("server gone")
        return list(items)

    commit = GroupCommit(flaky)
    with pytest.raises(ConnectionError):
        await commit.submit(1)
    assert await commit.submit(2) == 2


@pytest.mark.asyncio
async def test_a_flush_with_the_wrong_number_of_results_fails_its_callers() -> None:
    async def short(items: Sequence[int]) -> list[int | Exception]:
        return []

    with pytest.raises(RuntimeError, match="gave 0 results"):
        await GroupCommit(short).submit(1)


@pytest.mark.asyncio
async def test_batches_are_at_most_max_batch() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.flush, max_batch=2)
    first = await _hold_first_batch(commit, recorder)
    rest = [asyncio.create_task(commit.submit(n)) for n in (2, 4, 6, 8, 10)]
    await asyncio.sleep(0)
    recorder.gate.set()
    await asyncio.gather(first, *rest)
    assert recorder.batches == [[0], [2, 4], [6, 8], [10]]


@pytest.mark.asyncio
async def test_a_caller_cancelled_before_its_batch_left_is_not_written() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.flush)
    first = await _hold_first_batch(commit, recorder)
    dropped, kept = asyncio.create_task(commit.submit(2)), asyncio.create_task(commit.submit(4))
    await asyncio.sleep(0)
    dropped.cancel()
    recorder.gate.set()
    await first
    assert await kept == 40
    assert recorder.batches == [[0], [4]]
    assert dropped.cancelled()


@pytest.mark.asyncio
async def test_a_leader_cancelled_mid_flush_leaves_its_batch_to_finish() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.flush)
    first = await _hold_first_batch(commit, recorder)
    leader = asyncio.create_task(commit.submit(2))
    follower = asyncio.create_task(commit.submit(4))
    recorder.entered.clear()
    recorder.gate.clear()
    first_done = asyncio.ensure_future(first)
    recorder.gate.set()
    await first_done
    recorder.gate.clear()
    await recorder.entered.wait()  # the batch [2, 4] is on its way, led by `leader`
    leader.cancel()
    await asyncio.sleep(0)
    recorder.gate.set()
    assert await follower == 40
    assert leader.cancelled()
    assert recorder.batches == [[0], [2, 4]]


def test_a_batch_holds_at_least_one_item() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(Recorder().flush, max_batch=0)


@pytest.mark.asyncio
async def test_settle_waits_for_a_batch_whose_leader_was_cancelled() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.flush)
    first = await _hold_first_batch(commit, recorder)
    first.cancel()
    await asyncio.sleep(0)
    settling = asyncio.create_task(commit.settle())
    await asyncio.sleep(0.01)
    assert not settling.done()  # the write left: it is on its way all the same
    recorder.gate.set()
    await asyncio.wait_for(settling, 1)
    assert recorder.batches == [[0]]
