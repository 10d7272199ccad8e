"""Retry arithmetic: retryable statuses, doubling backoff, Retry-After parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from blobflow.core.retry import (
    MAX_BACKOFF_S,
    MAX_RETRY_AFTER_S,
    backoff_s,
    is_retryable_status,
    parse_retry_after,
    retry_delay_s,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

# ---------------------------------------------------------------- is_retryable_status


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(200, False, id="200-ok"),
        pytest.param(201, False, id="201-created"),
        pytest.param(301, False, id="301-moved"),
        pytest.param(400, False, id="400-bad-request"),
        pytest.param(401, False, id="401-unauthorized"),
        pytest.param(403, False, id="403-forbidden"),
        pytest.param(404, False, id="404-not-found"),
        pytest.param(408, True, id="408-request-timeout"),
        pytest.param(409, False, id="409-conflict"),
        pytest.param(422, False, id="422-unprocessable"),
        pytest.param(429, True, id="429-too-many-requests"),
        pytest.param(499, False, id="499-last-4xx"),
        pytest.param(500, True, id="500-internal"),
        pytest.param(502, True, id="502-bad-gateway"),
        pytest.param(503, True, id="503-unavailable"),
        pytest.param(504, True, id="504-gateway-timeout"),
        pytest.param(599, True, id="599-last-5xx"),
        pytest.param(600, False, id="600-not-http"),
    ],
)
def test_is_retryable_status(status: int, expected: bool) -> None:
    assert is_retryable_status(status) is expected


# ---------------------------------------------------------------- backoff_s


@pytest.mark.parametrize(
    ("backoff_ms", "retry_number", "expected"),
    [
        pytest.param(1000, 1, 1.0, id="1000ms-retry-1"),
        pytest.param(1000, 2, 2.0, id="1000ms-retry-2"),
        pytest.param(1000, 3, 4.0, id="1000ms-retry-3"),
        pytest.param(1000, 4, 8.0, id="1000ms-retry-4"),
        pytest.param(1000, 5, 16.0, id="1000ms-retry-5"),
        pytest.param(1000, 6, 30.0, id="1000ms-retry-6-capped"),
        pytest.param(1000, 7, 30.0, id="1000ms-retry-7-capped"),
        pytest.param(250, 1, 0.25, id="250ms-retry-1"),
        pytest.param(250, 3, 1.0, id="250ms-retry-3"),
        pytest.param(0, 1, 0.0, id="0ms-retry-1"),
        pytest.param(0, 50, 0.0, id="0ms-retry-50"),
        pytest.param(3_600_000, 1, 30.0, id="hour-first-retry-capped"),
        pytest.param(1000, 1000, 30.0, id="retry-1000-no-overflow"),
        pytest.param(1, 10**6, 30.0, id="retry-million-no-overflow"),
    ],
)
def test_backoff_s(backoff_ms: int, retry_number: int, expected: float) -> None:
    assert backoff_s(backoff_ms, retry_number) == pytest.approx(expected)
    assert isinstance(backoff_s(backoff_ms, retry_number), float)


@pytest.mark.parametrize(
    ("backoff_ms", "retry_number"),
    [
        pytest.param(1000, 0, id="retry-0"),
        pytest.param(1000, -1, id="retry-negative"),
        pytest.param(-1, 1, id="backoff-negative"),
    ],
)
def test_backoff_s_rejects_nonsense(backoff_ms: int, retry_number: int) -> None:
    with pytest.raises(ValueError, match="retry_number >= 1"):
        backoff_s(backoff_ms, retry_number)


# ---------------------------------------------------------------- parse_retry_after


def http_date(moment: datetime) -> str:
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("5", 5.0, id="five"),
        pytest.param(" 5 ", 5.0, id="padded"),
        pytest.param("120", 120.0, id="two-minutes"),
        pytest.param("300", MAX_RETRY_AFTER_S, id="exactly-cap"),
        pytest.param("100000", MAX_RETRY_AFTER_S, id="capped"),
        pytest.param("9" * 5000, MAX_RETRY_AFTER_S, id="beyond-int-digit-limit"),
        pytest.param("-1", None, id="negative"),
        pytest.param("1.5", None, id="fraction"),
        pytest.param("+5", None, id="plus-sign"),
        pytest.param("\uff15", None, id="fullwidth-digit"),
        pytest.param("abc", None, id="garbage"),
        pytest.param("", None, id="empty"),
        pytest.param("   ", None, id="blank"),
        pytest.param(http_date(NOW + timedelta(seconds=90)), 90.0, id="date-future"),
        pytest.param(http_date(NOW + timedelta(days=2)), MAX_RETRY_AFTER_S, id="date-far-future"),
        pytest.param(http_date(NOW - timedelta(hours=1)), 0.0, id="date-past"),
        pytest.param(http_date(NOW), 0.0, id="date-now"),
        pytest.param("Wed, 01 May 2024 12:00:30 +0000", 30.0, id="date-numeric-zone"),
        pytest.param("Wed, 01 May 2024 14:00:30 +0200", 30.0, id="date-other-zone"),
        pytest.param("Wed, 01 May 2024 12:00:30 -0000", 30.0, id="date-unknown-zone"),
        pytest.param("Wed, 32 May 2024 12:00:00 GMT", None, id="date-bad-day"),
        pytest.param("Wed, 01 Foo 2024 12:00:00 GMT", None, id="date-bad-month"),
        pytest.param("Wed, 01 May", None, id="date-truncated"),
        pytest.param("Wed, 01 May 2024 25:00:00 GMT", None, id="date-bad-hour"),
        pytest.param("Wed, 01 May 99999 12:00:00 GMT", None, id="date-year-out-of-range"),
        pytest.param("2024-05-01T12:00:30Z", None, id="iso-8601-is-not-http-date"),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_naive_now_is_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert parse_retry_after(http_date(NOW + timedelta(seconds=10)), naive) == 10.0


# ---------------------------------------------------------------- retry_delay_s


@pytest.mark.parametrize(
    ("backoff_ms", "retry_number", "retry_after_s", "expected"),
    [
        pytest.param(1000, 1, None, 1.0, id="no-header-first-retry"),
        pytest.param(1000, 3, None, 4.0, id="no-header-third-retry"),
        pytest.param(1000, 9, None, MAX_BACKOFF_S, id="no-header-capped"),
        pytest.param(1000, 3, 0.0, 0.0, id="header-zero-wins"),
        pytest.param(1000, 1, 120.0, 120.0, id="header-longer-than-backoff-wins"),
        pytest.param(1000, 9, 2.0, 2.0, id="header-shorter-than-backoff-wins"),
        pytest.param(1000, 1, 10_000.0, MAX_RETRY_AFTER_S, id="header-capped"),
        pytest.param(1000, 1, -5.0, 0.0, id="header-negative-is-now"),
    ],
)
def test_retry_delay_s(
    backoff_ms: int, retry_number: int, retry_after_s: float | None, expected: float
) -> None:
    assert retry_delay_s(backoff_ms, retry_number, retry_after_s) == expected
