"""Retry arithmetic for step calls: which answers are worth another attempt, and when (§5.2).

A step's `retry.backoff_ms` is the first delay; it doubles per retry up to
MAX_BACKOFF_S. A server's `Retry-After` replaces that delay, within
MAX_RETRY_AFTER_S so that one header cannot park a run for days.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 300.0

# Past this many doublings any non-zero backoff is far beyond the cap; stopping
# here keeps 2**n from growing into an integer too large to divide into a float.
_MAX_DOUBLINGS = 64
# More digits than this is beyond the cap anyway, and int() has a digit limit.
_MAX_DELAY_DIGITS = 18


def is_retryable_status(status: int) -> bool:
    """408 and 429 ask for another try; 5xx may pass; other answers will not change."""
    return status in (408, 429) or 500 <= status <= 599


def backoff_s(backoff_ms: int, retry_number: int) -> float:
    """The delay before retry `retry_number` (1 = the first retry), in seconds."""
    if backoff_ms < 0 or retry_number < 1:
        raise ValueError(
            f"backoff_ms must be >= 0 and retry_number >= 1, got {backoff_ms}, {retry_number}"
        )
    doublings = min(retry_number - 1, _MAX_DOUBLINGS)
    return min(backoff_ms * (1 << doublings) / 1000, MAX_BACKOFF_S)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` header, or None when it says nothing usable.

    The header is either delay-seconds or an HTTP-date; a date already past
    means "now". `now` without a timezone is taken as UTC.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        if len(text) > _MAX_DELAY_DIGITS:
            return MAX_RETRY_AFTER_S
        return min(float(int(text)), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(text)
    except (ValueError, TypeError, IndexError, OverflowError):
        # The stdlib date parser signals garbage in more than one way.
        return None
    delay = (_aware(when) - _aware(now)).total_seconds()
    return min(max(delay, 0.0), MAX_RETRY_AFTER_S)


def retry_delay_s(backoff_ms: int, retry_number: int, retry_after_s: float | None) -> float:
    """The server knows its own load better than our schedule does: its answer wins."""
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), MAX_RETRY_AFTER_S)
    return backoff_s(backoff_ms, retry_number)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
