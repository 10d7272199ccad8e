"""Change notices only ask for a reload, coalesced to at most one per second per replica
(RELIABILITY.md guarantee 9): a burst costs about one reload a second, and the last notice
of a burst is always followed by one."""

from __future__ import annotations

import asyncio
import itertools
import time
from functools import partial

import pytest
from nats.aio.client import Client as NatsClient

from blobflow.core.catalog import Catalog
from blobflow.core.subjects import CHANGED_SUBJECT
from blobflow.runtime.reloads import CoalescingReloader
from tests.api_support import Api
from tests.support import eventually


class FakeTime:
    """A clock that only moves when the reloader sleeps (or a test says so)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds
        await asyncio.sleep(0)


async def settle() -> None:
    """Let the reloader's task run until it waits again."""
    for _ in range(10):
        await asyncio.sleep(0)


class Recorder:
    def __init__(self, time_: FakeTime | None = None, *, fail: bool = False) -> None:
        self.time = time_
        self.fail = fail
        self.starts: list[float] = []

    async def __call__(self) -> None:
        self.starts.append(self.time.now if self.time else time.monotonic())
        if self.fail:
            raise RuntimeError("database gone")


@pytest.mark.asyncio
async def test_requests_during_the_interval_share_one_reload_after_it() -> None:
    fake = FakeTime()
    reload = Recorder(fake)
    async with CoalescingReloader(reload, clock=fake.clock, sleep=fake.sleep) as reloader:
        for _ in range(1000):
            reloader.request()
        await settle()
        assert reload.starts == [100.0]  # at once: nothing was reloaded in the last second
        fake.now += 0.25
        for _ in range(1000):
            reloader.request()
        await settle()
        # The second reload waited out the rest of the interval, then served all 1000.
        assert reload.starts == [100.0, 101.0]
        assert fake.sleeps == [0.75]
        await settle()
        assert reloader.reloads == 2  # and nothing is left over
        fake.now += 5
        reloader.request()
        await settle()
        assert reload.starts == [100.0, 101.0, 106.0]  # long after: at once again
        assert fake.sleeps == [0.75]


@pytest.mark.asyncio
async def test_a_request_while_reloading_gets_a_reload_after_it() -> None:
    fake = FakeTime()
    entered, release = asyncio.Event(), asyncio.Event()
    starts: list[float] = []

    async def slow_reload() -> None:
        starts.append(fake.now)
        entered.set()
        await release.wait()

    async with CoalescingReloader(slow_reload, clock=fake.clock, sleep=fake.sleep) as reloader:
        reloader.request()
        await entered.wait()
        entered.clear()
        reloader.request()  # the running reload may have read the definitions too early
        release.set()
        await entered.wait()
    assert starts == [100.0, 101.0]


@pytest.mark.asyncio
async def test_a_failed_reload_is_logged_and_the_next_request_reloads_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeTime()
    reload = Recorder(fake, fail=True)
    async with CoalescingReloader(reload, clock=fake.clock, sleep=fake.sleep) as reloader:
        reloader.request()
        await settle()
        reloader.request()
        await settle()
    assert reload.starts == [100.0, 101.0]
    assert "reloading definitions after a change notice failed" in caplog.text


@pytest.mark.asyncio
async def test_with_a_real_clock_a_stream_of_requests_reloads_once_per_interval() -> None:
    reload = Recorder()
    interval_s = 0.05
    async with CoalescingReloader(reload, interval_s=interval_s) as reloader:
        started = time.monotonic()
        while time.monotonic() - started < 0.4:
            reloader.request()
            await asyncio.sleep(0.002)
        last_request = time.monotonic()
        reloader.request()
        await asyncio.sleep(2 * interval_s)
    gaps = [later - earlier for earlier, later in itertools.pairwise(reload.starts)]
    assert len(reload.starts) <= 0.45 / interval_s + 1, reload.starts
    assert min(gaps) >= interval_s * 0.99
    assert reload.starts[-1] >= last_request  # the last request was followed by a reload


@pytest.mark.asyncio
async def test_a_flood_of_change_notices_reloads_a_replica_about_once_a_second(
    api: Api, nats_client: NatsClient
) -> None:
    """Before, every message on blobflow.registry.changed rebuilt the catalog."""
    definitions = api.service.definitions
    built: list[float] = []
    build = definitions.catalog

    async def counted() -> Catalog:
        built.append(time.monotonic())
        return await build()

    definitions.catalog = counted  # type: ignore[method-assign]
    for reloads in (1, 2):
        for number in range(300):
            await nats_client.publish(CHANGED_SUBJECT, b"rebuild everything" if number else b"")
        await nats_client.flush()
        # The first burst: a reload at once (sometimes one more a second later for the
        # notices it had not seen yet); the second, within that second: one a second later.
        await eventually(partial(_at_least, built, reloads), timeout_s=5)
    await asyncio.sleep(0.5)
    assert len(built) == 2, built
    assert built[1] - built[0] >= 0.99


async def _at_least(built: list[float], count: int) -> bool:
    return len(built) >= count
