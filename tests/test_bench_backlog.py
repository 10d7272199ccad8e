"""The backlog benchmark's table: one row per interval, the last reading always shown."""

from __future__ import annotations

import pytest

from bench.backlog import Reading, render


def readings(*seconds: float) -> list[Reading]:
    return [Reading(at_s, int(at_s) * 3, 70.0, 90, 64) for at_s in seconds]


@pytest.mark.parametrize(
    ("seconds", "rows"),
    [
        ((0.0,), [0.0]),
        ((0.0, 5.0, 10.0), [0.0, 10.0]),  # the last reading closes the table
        ((0.0, 60.0, 119.0, 125.0, 240.0, 250.0), [0.0, 125.0, 250.0]),
        ((0.0, 130.0, 260.0), [0.0, 130.0, 260.0]),
    ],
)
def test_a_row_every_interval_and_the_last(seconds: tuple[float, ...], rows: list[float]) -> None:
    table = render(readings(*seconds), "summary", every_row_s=120.0)
    body = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert [float(line.split("|")[1]) for line in body[1:]] == rows
    assert "summary" in table
