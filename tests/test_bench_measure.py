"""The benchmark's arithmetic: nearest-rank percentiles and this process's own /proc."""

from __future__ import annotations

import math
import os

import pytest

from bench.measure import cpu_s, peak_rss_mib, percentile


@pytest.mark.parametrize(
    ("values", "share", "expected"),
    [
        ([5.0], 0.5, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([float(n) for n in range(1, 101)], 0.95, 95.0),
        ([float(n) for n in range(1, 101)], 0.99, 99.0),
        ([3.0, 1.0, 2.0], 1.0, 3.0),
        ([3.0, 1.0, 2.0], 0.0, 1.0),
    ],
)
def test_percentile(values: list[float], share: float, expected: float) -> None:
    assert percentile(values, share) == expected


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 0.5))


def test_cpu_and_memory_of_a_live_process() -> None:
    assert cpu_s(os.getpid()) > 0
    assert peak_rss_mib(os.getpid()) > 10
