"""Cancel tokens: a cancel request abandons work; a task cancellation stays one."""

from __future__ import annotations

import asyncio

import pytest

from blobflow.errors import ExecutionCancelled
from blobflow.runtime.cancellation import CancelToken, raise_if_cancelling


async def _value(delay_s: float, value: int) -> int:
    await asyncio.sleep(delay_s)
    return value


@pytest.mark.asyncio
async def test_guard_returns_the_result() -> None:
    assert await CancelToken().guard(_value(0, 7)) == 7


@pytest.mark.asyncio
async def test_guard_passes_errors_through() -> None:
    async def boom() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await CancelToken().guard(boom())


@pytest.mark.asyncio
async def test_cancel_abandons_work_in_flight() -> None:
    token = CancelToken()
    finished = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            finished.set()

    guarded = asyncio.ensure_future(token.guard(hang()))
    await asyncio.sleep(0.01)
    token.cancel()
    with pytest.raises(ExecutionCancelled):
        await guarded
    assert finished.is_set()  # the abandoned work was cancelled, not left running


@pytest.mark.asyncio
async def test_a_cancelled_token_refuses_new_work() -> None:
    token = CancelToken()
    token.cancel()
    assert token.cancelled
    with pytest.raises(ExecutionCancelled):
        token.check()
    with pytest.raises(ExecutionCancelled):
        await token.guard(_value(0, 1))


@pytest.mark.asyncio
async def test_task_cancellation_is_not_turned_into_a_cancel_request() -> None:
    token = CancelToken()
    task = asyncio.ensure_future(token.guard(_value(10, 1)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not token.cancelled


@pytest.mark.asyncio
async def test_a_swallowed_cancel_is_delivered_at_the_next_round() -> None:
    rounds = 0
    swallowing = asyncio.Event()

    async def loop() -> None:
        nonlocal rounds
        while True:
            raise_if_cancelling()
            rounds += 1
            try:
                swallowing.set()
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass  # what a library that swallows a cancel does

    task = asyncio.ensure_future(loop())
    await swallowing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rounds == 1
