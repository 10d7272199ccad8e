"""`make bench-backlog`: 10,000 queued events worked off by one replica, memory sampled.

The events are published before the replica starts (on a fresh stack, as in
`make bench`); the replica runs with `BLOBFLOW_MAX_CONCURRENCY=16` until every
delta event has arrived. Every `--every-s` seconds its resident memory, its
asyncio tasks and its executions queued or running are sampled; at the end,
the peak RSS (VmHWM) and the check that the job was done exactly. The table
goes to stdout and to bench/results/<date>-backlog.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from datetime import date

import aiohttp

from bench.contenders import ROOT, Blobflow
from bench.measure import DELTAS_PER_EVENT, memory_mib, peak_rss_mib, verify
from bench.run import DATABASE, NAMES, DeltaEvents, downstream_process, fresh_stack, publish_backlog

GAUGES = ("blobflow_asyncio_tasks", "blobflow_backlog_executions")


@dataclass(frozen=True)
class Reading:
    at_s: float
    delta_events: int
    rss_mib: float
    tasks: int
    queued: int


async def gauges(http: aiohttp.ClientSession, url: str) -> dict[str, int]:
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    pairs = (line.partition(" ") for line in text.splitlines())
    return {name: int(float(value)) for name, _, value in pairs if name in GAUGES}


async def work_off(
    events: int, every_s: float, concurrency: int
) -> tuple[list[Reading], str, bool]:
    """The readings, a summary, and whether the job was done exactly."""
    async with downstream_process() as service_url, fresh_stack(service_url) as stack:
        js = stack.nc.jetstream()
        await publish_backlog(js, events)
        arrivals = DeltaEvents(DELTAS_PER_EVENT * events)
        subscription = await stack.nc.subscribe(f"{NAMES.deltas_prefix}.>", cb=arrivals.seen)
        replica = Blobflow(1, env={"BLOBFLOW_MAX_CONCURRENCY": str(concurrency)})
        started = time.monotonic()
        await replica.start(stack.nats_url, stack.mongodb_url, DATABASE, service_url)
        (pid,), (url,) = replica.pids, replica.urls
        readings: list[Reading] = []
        async with aiohttp.ClientSession() as http:
            while not arrivals.all_arrived.is_set():
                sampled = await gauges(http, url)
                readings.append(
                    Reading(
                        time.monotonic() - started, len(arrivals.ids), memory_mib(pid, "VmRSS"),
                        sampled["blobflow_asyncio_tasks"], sampled["blobflow_backlog_executions"],
                    )
                )  # fmt: skip
                with contextlib.suppress(TimeoutError):  # time for the next reading
                    await asyncio.wait_for(arrivals.all_arrived.wait(), every_s)
        elapsed_s = time.monotonic() - started
        await subscription.unsubscribe()
        peak_mib = peak_rss_mib(pid)
        await replica.stop()
        outcome = await verify(stack.mongo[DATABASE], js, events)
    readings.append(Reading(elapsed_s, len(arrivals.ids), readings[-1].rss_mib, 0, 0))
    summary = (
        f"{events:,} events worked off in {elapsed_s:,.0f} s ({events / elapsed_s:.1f} events/s); "
        f"peak RSS {peak_mib:.0f} MiB; at most {max(r.tasks for r in readings)} asyncio tasks "
        f"and {max(r.queued for r in readings)} executions queued or running; "
        f"{outcome.deltas:,} deltas stored, {outcome.delta_events:,} delta events; "
        + ("; ".join(outcome.problems) or "no problems")
    )
    return readings, summary, not outcome.problems


def render(readings: list[Reading], summary: str, every_row_s: float) -> str:
    lines = [
        "| s | delta events | RSS MiB | asyncio tasks | executions queued or running |",
        "|---:|---:|---:|---:|---:|",
    ]
    next_row_s = 0.0
    for index, reading in enumerate(readings):
        if reading.at_s >= next_row_s or index == len(readings) - 1:
            lines.append(
                f"| {reading.at_s:.0f} | {reading.delta_events:,} | {reading.rss_mib:.0f} "
                f"| {reading.tasks} | {reading.queued} |"
            )
            next_row_s = reading.at_s + every_row_s
    return "\n".join([f"# Backlog, {date.today().isoformat()}", "", summary, "", *lines, ""])


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.backlog", description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--every-s", type=float, default=5.0, help="sampling interval")
    parser.add_argument("--concurrency", type=int, default=16)
    options = parser.parse_args(argv)
    readings, summary, exact = await work_off(options.events, options.every_s, options.concurrency)
    table = render(readings, summary, every_row_s=120.0)
    print(table)
    (ROOT / "bench" / "results" / f"{date.today().isoformat()}-backlog.md").write_text(table)
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
